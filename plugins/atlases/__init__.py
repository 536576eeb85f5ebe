"""Built-in atlases: ``synthetic``, ``custom``, ``from_labels``; real atlases ``schaefer``,
``yeo``, ``tian``, ``cerebellum``, ``combined``; coordinate atlases ``seitzman``, ``dosenbach``,
``power``."""

from megafc.core import hookimpl

from .cerebellum import CerebellumAtlas
from .combined import CombinedAtlas
from .coordinates import DosenbachAtlas, PowerAtlas, SeitzmanAtlas
from .custom import CustomAtlas
from .from_labels import FromLabelsAtlas
from .schaefer import SchaeferAtlas
from .synthetic import SyntheticAtlas
from .tian import TianAtlas
from .yeo import YeoAtlas


@hookimpl
def megafc_atlases():
    return [
        SyntheticAtlas, CustomAtlas, FromLabelsAtlas, SchaeferAtlas, YeoAtlas, TianAtlas,
        CerebellumAtlas, CombinedAtlas, SeitzmanAtlas, DosenbachAtlas, PowerAtlas,
    ]
