"""Base classes for the six plugin kinds.

A plugin is a class that subclasses one of these, sets ``name`` (its config name, as in
``megafc estimator=<name>``) and may declare a nested ``Config`` dataclass with its
parameters. The core registers that ``Config`` with Hydra, so config values are type-checked
and unknown keys are refused before anything runs; the plugin receives it as ``self.config``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd

from .data import Atlas, DatasetInputs, PoolingInputs, PoolingResult
from .errors import ConfigError, PluginError


class Choice(str, Enum):
    """A config value from a fixed list (subclass it, one member per choice, named as its
    value). OmegaConf refuses any other value when the config is composed, naming the key and the
    choices, and a plugin built in Python with the text of one gets the member; the member
    compares and prints as its text, so plugin code reads ``c.sampler == "nutpie"``."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    def __repr__(self) -> str:  # in a listed default or a site's settings: 'pymc', as it is typed
        return repr(self.value)


def choice_type(hint: Any) -> tuple[type[Choice] | None, bool]:
    """The Choice a field's type names (``Sampler``, ``Optional[Sampler]``; not ``list[Sampler]``),
    and whether it may be None."""
    import types

    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = typing.get_args(hint) if is_union else ()
    found = next((t for t in (hint, *args) if isinstance(t, type) and issubclass(t, Choice)), None)
    return found, type(None) in args


def _without_none(hint: Any) -> Any:
    """``X`` of ``Optional[X]``; any other type as it is."""
    return next(a for a in typing.get_args(hint) if a is not type(None)) if choice_type(hint)[1] else hint


def choice_fields(config_cls: type, prefix: str = "") -> list[tuple[str, type[Choice]]]:
    """(key, Choice) of every choice-valued field of a Config, nested dataclasses and lists too."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:
        return []
    out = []
    for f in dataclasses.fields(config_cls):
        hint = _without_none(hints.get(f.name))
        for t in (hint, *typing.get_args(hint)):
            if isinstance(t, type) and issubclass(t, Choice):
                out.append((prefix + f.name, t))
            elif isinstance(t, type) and dataclasses.is_dataclass(t):
                out += choice_fields(t, f"{prefix}{f.name}.")
    return out


def element_choice(hint: Any) -> type[Choice] | None:
    """The Choice of each element of a ``list[Choice]`` or ``dict[str, Choice]`` field (also Optional)."""
    inner = typing.get_args(_without_none(hint))[-1:]
    return inner[0] if inner and isinstance(inner[0], type) and issubclass(inner[0], Choice) else None


def _member(enum: type[Choice], value: Any, key: str, optional: bool = False) -> Choice:
    """The member of ``enum`` whose value (or, as OmegaConf reads it, name) is ``value``."""
    try:
        return enum(value)
    except ValueError:
        if isinstance(value, str) and value in enum.__members__:
            return enum[value]
        raise ConfigError(f"config key '{key}' is {value!r}; expected one of {[m.value for m in enum]}"
                          + (" or null" if optional else "")) from None


def coerce_choices(config: Any, prefix: str) -> None:
    """Choice-valued fields given as text (a plugin built in Python rather than composed by
    Hydra) become their members; a value that is not a choice is refused as OmegaConf refuses it."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return
    try:
        hints = typing.get_type_hints(type(config))
    except Exception:  # annotations this process cannot evaluate: nothing to check
        return
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), f"{prefix}{f.name}"
        for i, item in enumerate(value if isinstance(value, (list, tuple)) else [value]):
            if dataclasses.is_dataclass(item):
                coerce_choices(item, f"{key}[{i}]." if isinstance(value, (list, tuple)) else f"{key}.")
        hint = hints.get(f.name)
        enum, optional = choice_type(hint)
        if enum is not None and not isinstance(value, enum) and not (value is None and optional):
            object.__setattr__(config, f.name, _member(enum, value, key, optional))
            continue
        element = element_choice(hint)
        if element is None or value is None:
            continue
        if isinstance(value, list):
            object.__setattr__(config, f.name, [_member(element, v, f"{key}[{i}]") for i, v in enumerate(value)])
        elif isinstance(value, dict):
            object.__setattr__(config, f.name, {k: _member(element, v, f"{key}.{k}") for k, v in value.items()})


class Plugin:
    """Common behaviour of every plugin kind."""

    #: The kind of plugin (the Hydra config group): set by each base class below.
    kind: ClassVar[str] = ""
    #: The plugin's config name; unique within its kind.
    name: ClassVar[str] = ""
    #: What to cite when the plugin is used, one reference a string in the style
    #: ``Authors (Year) Title. Journal Volume:Pages``; collected into methods.md, provenance.json
    #: and references.bib. A property may compute them from the config (e.g. the sampler used).
    references: ClassVar[Sequence[str]] = ()
    #: Distributions the plugin relies on beyond core's (e.g. ``pymc``): a run that uses the
    #: plugin records their versions (those installed) in provenance.json, and megafc keeps their
    #: loggers at WARNING.
    packages: ClassVar[Sequence[str]] = ()

    @dataclass
    class Config:
        """No parameters."""

    def __init__(self, config: Any = None) -> None:
        if config is None:
            config = self.Config()
        if not isinstance(config, self.Config):
            raise PluginError(
                f"{self.kind} '{self.name}': expected a {self.Config.__qualname__} config, "
                f"got {type(config).__name__}"
            )
        coerce_choices(config, f"{self.kind}.")
        self.config = config

    @classmethod
    def from_config(cls, config: Any, registry: Any) -> "Plugin":
        """How the registry builds the plugin from its checked config. Plugins made of other
        plugins (an atlas assembled from other atlases) override it to build those from the same
        ``registry``, so a registry built with extra plugins reaches the parts too."""
        return cls(config)

    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring: what ``megafc-plugins`` shows."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def params(self) -> dict[str, Any]:
        """The config as a plain dict (choices as their text), for provenance and methods text."""
        def plain(value: Any) -> Any:
            if isinstance(value, Choice):
                return value.value
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value

        return plain(dataclasses.asdict(self.config)) if dataclasses.is_dataclass(self.config) else {}

    def describe(self) -> str:
        """What this plugin did, in words for methods.md (override to state the settings that
        shape the results in a sentence; the parameters are listed there anyway)."""
        return self.summary().rstrip(".")


class DatasetLoader(Plugin):
    """Provides the scan table and each scan's inputs."""

    kind = "dataset"

    def load(self, atlas: Atlas, seed: int) -> DatasetInputs:
        """Return the scans and their timeseries (in ``atlas`` region order) or connectomes."""
        raise NotImplementedError

    def region_labels(self) -> list[str] | None:
        """The data's own region labels, read before ``load`` (e.g. from a timeseries header),
        for atlases built from them (``AtlasLoader.needs_data_labels``); None: the data has none."""
        return None


class AtlasLoader(Plugin):
    """Provides regions with their network, subnetwork and system class."""

    kind = "atlas"
    #: True: the atlas is built from the dataset's region labels; the pipeline then calls
    #: ``load_labels(dataset.region_labels())`` instead of ``load()`` (e.g. ``from_labels``).
    needs_data_labels: ClassVar[bool] = False

    def load(self) -> Atlas:
        raise NotImplementedError

    def load_labels(self, labels: list[str]) -> Atlas:
        """The atlas of the data's own region labels (only with ``needs_data_labels``)."""
        raise NotImplementedError


class Denoiser(Plugin):
    """Chooses the confounds and sample mask used when extracting one scan's timeseries."""

    kind = "denoiser"

    def confounds(self, bold_file: str) -> tuple[pd.DataFrame | None, np.ndarray | None]:
        """Return (confounds, sample_mask) for a BOLD file, as nilearn's maskers take them.

        ``sample_mask`` holds the indices of the volumes kept; it may be empty, or shorter than
        the confounds need: extraction then excludes the scan with the reason in ``scans.tsv``.
        """
        return None, None

    def signal_kwargs(self) -> dict[str, Any]:
        """Extra masker arguments (filtering, detrending, standardisation)."""
        return {}


class ConnectivityEstimator(Plugin):
    """Turns one scan's region timeseries into a region x region connectivity matrix.

    ``estimate(timeseries)`` receives an (n_volumes, n_regions) array and must return a
    symmetric (n_regions, n_regions) array of finite values on the scale that is pooled
    (Fisher z for correlation-type measures). The diagonal is ignored. Network-pair FC is the
    mean over a pair's edges, so the scale should be one where averaging edges and differences
    between scans mean something (Fisher z, or tangent-space coordinates).

    Estimators that need every scan at once (tangent space: each scan relative to the group's
    mean covariance) set ``group_level = True`` and implement ``estimate_group``.
    """

    kind = "estimator"
    #: True: ``estimate_group`` is called once with every included scan's timeseries.
    group_level: ClassVar[bool] = False
    #: The ``stat-`` entity of the derivatives' relmat files (xcp_d's name where it has one, e.g.
    #: ``pearsoncorrelation``); empty: the plugin's name without punctuation.
    stat_entity: ClassVar[str] = ""
    #: True: the values are Fisher z of correlations (derivatives write r = tanh(z)); False for
    #: other scales (e.g. tangent coordinates), written as they are.
    fisher_z: ClassVar[bool] = True

    def estimate(self, timeseries: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def estimate_group(self, timeseries: list[np.ndarray]) -> list[np.ndarray]:
        """One matrix per scan, in order, estimated from all scans together."""
        return [self.estimate(ts) for ts in timeseries]


class Harmonizer(Plugin):
    """Removes site (dataset) effects from the connectomes before they are aggregated and pooled.

    ``harmonize(connectomes, scans)`` receives every included scan's connectome and the scan
    table (``dataset`` is the site; ``condition``, ``drug`` and ``mean_fd`` are what must be
    preserved) and returns connectomes of the same scans, labels and shape. It exists so that
    the field's usual site correction (ComBat) can be compared with the hierarchical model's
    own site terms on the same data, in one sweep over ``harmonizer``.
    """

    kind = "harmonizer"

    def harmonize(self, connectomes: Any, scans: pd.DataFrame) -> Any:
        return connectomes


class PoolingModel(Plugin):
    """Pools network-pair FC across scans, subjects, datasets and drugs."""

    kind = "pooling"
    #: Set True to be given the region-level connectomes in ``PoolingInputs`` (edge-level models).
    needs_connectomes: ClassVar[bool] = False
    #: Set True for models of within-subject drug-minus-control differences: drug scans
    #: without a control of the same subject (and controls without a drug scan) are then
    #: excluded before extraction, with the reason in scans.tsv. Scan-level models (False)
    #: use every scan of a dataset that has both drug and control scans.
    needs_pairs: ClassVar[bool] = False
    #: Set True when ``fit`` handles summary outcomes: the network-pair table then also holds,
    #: per scan, each summary's mean FC as a pseudo pair (``network_a`` = its name,
    #: ``network_b`` = ""; membership in ``pairs.attrs["summaries"]``), and the model returns
    #: their effects as ``tables["summaries"]`` (one row per summary and effect) instead of
    #: in ``effects``.
    fits_summaries: ClassVar[bool] = False

    def pool(self, inputs: PoolingInputs) -> PoolingResult:
        """What the run calls. Models of the network-pair table implement ``fit``; models that
        need more of ``inputs`` (the connectomes) override this instead."""
        if self.needs_connectomes:  # models written for the earlier set_connectomes contract
            self.set_connectomes(inputs.connectomes, inputs.atlas, inputs.scans)
        return self.fit(inputs.pairs, inputs.seed)

    def set_connectomes(self, connectomes: Any, atlas: Atlas, scans: pd.DataFrame) -> None:
        """Earlier contract, kept for plugins that use it: prefer overriding ``pool``."""
        self.connectomes, self.atlas, self.scans = connectomes, atlas, scans

    def fit(self, pairs: pd.DataFrame, seed: int) -> PoolingResult:
        """Fit the model to the network-pair table and summarise its effects."""
        raise NotImplementedError


class Reporter(Plugin):
    """Writes a human-readable account of finished results: a report, its figures.

    ``scope`` says what it reports on: ``run`` reporters are called at the end of every run
    whose config enables ``report`` or ``figures``, on the staged run folder (``folder``) that
    will be moved to ``shown_as``, with the sections every plugin adds (hook
    ``megafc_report_sections``); ``sweep`` reporters at the end of a multirun, with the sweep
    folder (``megafc-compare`` runs the built-in one on any sweep folder); ``calibration`` reporters by
    ``megafc-calibrate`` with its output folder. A reporter that fails is logged; the results
    it would have described stay in place.
    """

    kind = "reporter"
    scope: ClassVar[str] = "run"

    def write(self, folder: Path, shown_as: Path | None = None, sections: Sequence[Any] = ()) -> Path | None:
        """Write the report into ``folder`` (or the folder it names); return its main file."""
        raise NotImplementedError


#: kind -> (registration hook name, base class)
PLUGIN_KINDS: dict[str, tuple[str, type[Plugin]]] = {
    "dataset": ("megafc_datasets", DatasetLoader),
    "atlas": ("megafc_atlases", AtlasLoader),
    "denoiser": ("megafc_denoisers", Denoiser),
    "estimator": ("megafc_estimators", ConnectivityEstimator),
    "harmonizer": ("megafc_harmonizers", Harmonizer),
    "pooling": ("megafc_pooling_models", PoolingModel),
    "reporter": ("megafc_reporters", Reporter),
}


def config_fields(config_cls: type, prefix: str = "") -> list[dict[str, Any]]:
    """Every config key of a plugin's ``Config`` (nested dataclasses flattened to ``a.b``): its
    type, default and documentation, which is the ``#:`` comment right above the field (the
    convention Sphinx reads); a field a subclass redefines without one keeps its base's. For
    ``megafc-plugins --show``."""
    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_field_comments(klass))
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:
        hints = {}
    rows = []
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        enum, optional = choice_type(hints.get(f.name))
        if enum is not None:  # the choices, not the Enum's name
            kind = " | ".join([*(m.value for m in enum), *(["null"] if optional else [])])
            default = default.value if isinstance(default, enum) else default
        elif element_choice(hints.get(f.name)) is not None:  # list[Sampler]: each element one of them
            hint, optional = hints[f.name], choice_type(hints[f.name])[1]
            kind = (f"{'map' if typing.get_origin(_without_none(hint)) is dict else 'list'} of "
                    + " | ".join(m.value for m in element_choice(hint)) + (", or null" if optional else ""))
        if dataclasses.is_dataclass(default):
            rows += config_fields(type(default), f"{prefix}{f.name}.")
            continue
        rows.append({"key": prefix + f.name, "type": kind, "default": default, "doc": docs.get(f.name, "")})
    return rows


def _field_comments(klass: type) -> dict[str, str]:
    import inspect
    import re
    import textwrap

    try:
        lines = textwrap.dedent(inspect.getsource(klass)).splitlines()
    except (OSError, TypeError):  # classes made at run time have no source
        return {}
    start = next((i for i, l in enumerate(lines) if l.startswith("class ")), None)
    if start is None:
        return {}
    lines = lines[start + 1:]  # the body, after any decorators
    body = min((len(l) - len(l.lstrip()) for l in lines if l.strip()), default=0)
    out: dict[str, str] = {}
    comment: list[str] = []
    for line in lines:
        stripped = line.strip()
        if len(line) - len(line.lstrip()) != body:
            continue
        if stripped.startswith("#:"):
            comment.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and comment:
            out[match.group(1)] = " ".join(comment)
        comment = []
    return out
