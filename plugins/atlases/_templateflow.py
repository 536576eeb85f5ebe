"""Atlas files from a TemplateFlow home: the way fMRIPrep users already have their templates.

Nothing here is a plugin; ``schaefer``, ``tian`` and ``cerebellum`` use it with
``atlas.source=templateflow``. One atlas is a label image and its label table in
``<home>/tpl-<template>/``::

    tpl-<template>_res-<NN>_atlas-<atlas>[_desc-<desc>]_dseg.nii.gz
    tpl-<template>_atlas-<atlas>[_desc-<desc>]_dseg.tsv      (columns index, name[, color])

The home is ``atlas.templateflow_home`` if set, else ``$TEMPLATEFLOW_HOME``, else
templateflow's default (the ``templateflow`` folder of the user cache, e.g.
``~/.cache/templateflow``). Files are found through ``templateflow.client.TemplateFlowClient``.
A file present with content is read as it is (offline). TemplateFlow's home holds empty
placeholders for the files it serves but has not downloaded yet; those are downloaded with the
client's ``get`` only when ``download`` is true. Files still missing or empty after that (or
without it) are reported with their exact paths, the template, and how to provide them. A
missing or empty home is never set up unless ``download`` is true.

``templateflow.api`` and ``templateflow.conf`` are not imported at module import: importing
them sets up a TemplateFlow home as a side effect.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from megafc.core import ConfigError, InputError

from ._files import _first_line, check_image_labels, read_label_file

#: Templates (fMRIPrep output spaces) the TemplateFlow source serves.
TEMPLATES = ("MNI152NLin2009cAsym", "MNI152NLin6Asym")
#: Values of ``atlas.source`` for atlases read from local files or TemplateFlow.
FILE_SOURCES = ("files", "templateflow")


@dataclass
class FileOrTemplateFlowConfig:
    """Config keys shared by atlases read from local files or from a TemplateFlow home."""

    #: Where the files come from: "files" (atlas.image + atlas.labels) or "templateflow".
    source: str = "files"
    #: TemplateFlow template = space of the image (source=templateflow): MNI152NLin2009cAsym
    #: or MNI152NLin6Asym.
    template: str = "MNI152NLin2009cAsym"
    #: TemplateFlow home (None: $TEMPLATEFLOW_HOME, else ~/.cache/templateflow).
    templateflow_home: Optional[str] = None
    #: Voxel size of the TemplateFlow label image in mm (res-01 / res-02): 1 or 2.
    resolution_mm: int = 1
    #: Template space of local files (source=files), e.g. MNI152NLin6Asym; None: unknown.
    space: Optional[str] = None


def require_key(value: Optional[str], key: str, hint: str) -> None:
    if value is None or str(value).strip() == "":
        raise ConfigError(f"config key '{key}' is not set; {hint}")


def check_file_or_templateflow(c: Any, hint: str) -> None:
    """Validate a ``FileOrTemplateFlowConfig`` (with ``image`` and ``labels``) at construction."""
    check_source_and_template(c.source, c.template, FILE_SOURCES)
    if c.space is not None and str(c.space).strip() == "":
        raise ConfigError("config key 'atlas.space' is empty; name the template space "
                          "(e.g. MNI152NLin6Asym) or leave it unset")
    if c.source == "templateflow" and c.space is not None and c.space != c.template:
        raise ConfigError(
            f"config key 'atlas.space' is {c.space!r} but atlas.template is {c.template!r}; with "
            "atlas.source=templateflow the space is the template: set atlas.template instead"
        )
    if c.resolution_mm not in (1, 2):
        raise ConfigError(f"config key 'atlas.resolution_mm' is {c.resolution_mm!r}; expected one of [1, 2]")
    if c.source == "files":
        require_key(c.image, "atlas.image", hint)
        require_key(c.labels, "atlas.labels", hint)


def load_file_or_templateflow(c: Any, what: str, atlas: str, desc: str,
                              parse: Callable[[str], dict]) -> tuple[Path, Any, Optional[str]]:
    """(label image, region table with ``index``, space) from local files or TemplateFlow."""
    import pandas as pd

    from ._files import local_label_regions

    if c.source != "templateflow":
        image, regions = local_label_regions(c.image, c.labels, parse, what)
        return image, regions, c.space
    tf = fetch_templateflow_atlas(what, c.template, atlas, desc, c.resolution_mm, home=c.templateflow_home,
                                  download=False, distributed=False)
    try:
        regions = pd.DataFrame([{"index": index, **parse(label)} for index, label in tf.pairs])
    except InputError as exc:
        raise InputError(f"{what}: label table '{tf.table}': {exc}") from exc
    return tf.image, regions, c.template


@dataclass
class TemplateFlowAtlas:
    """One atlas found in a TemplateFlow home."""

    image: Path
    table: Path
    #: (image value, label) pairs of the table, sorted, background left out.
    pairs: list[tuple[int, str]]
    home: Path
    template: str


def check_source_and_template(source: str, template: str, sources: tuple[str, ...]) -> None:
    """ConfigError naming the key when ``atlas.source`` or ``atlas.template`` is not allowed."""
    if source not in sources:
        raise ConfigError(f"config key 'atlas.source' is {source!r}; expected one of {list(sources)}")
    if template not in TEMPLATES:
        raise ConfigError(
            f"config key 'atlas.template' is {template!r}; expected one of {list(TEMPLATES)} "
            "(the fMRIPrep output spaces the TemplateFlow source serves)"
        )


def templateflow_home(configured: Optional[str] = None) -> Path:
    """``atlas.templateflow_home``, else ``$TEMPLATEFLOW_HOME``, else templateflow's default."""
    if configured is not None and str(configured).strip():
        return Path(str(configured)).expanduser().absolute()
    env = os.environ.get("TEMPLATEFLOW_HOME")
    if env:
        return Path(env).expanduser().absolute()
    from platformdirs import user_cache_dir  # what templateflow itself uses

    return Path(user_cache_dir("templateflow")).absolute()


def file_names(template: str, atlas: str, desc: Optional[str], resolution: int) -> tuple[str, str]:
    """TemplateFlow's names of the label image and label table, relative to the home."""
    d = f"_desc-{desc}" if desc else ""
    folder = f"tpl-{template}"
    return (f"{folder}/tpl-{template}_res-{resolution:02d}_atlas-{atlas}{d}_dseg.nii.gz",
            f"{folder}/tpl-{template}_atlas-{atlas}{d}_dseg.tsv")


def _queries(template: str, atlas: str, desc: Optional[str], resolution: int) -> list[dict[str, Any]]:
    """Client queries of the image and the table (TemplateFlow's tables have no res- entity)."""
    return [{"atlas": atlas, "desc": desc, "resolution": resolution, "suffix": "dseg", "extension": ".nii.gz"},
            {"atlas": atlas, "desc": desc, "suffix": "dseg", "extension": ".tsv"}]


def _get_command(template: str, queries: list[dict[str, Any]]) -> str:
    calls = "; ".join(
        f"tf.get({template!r}, " + ", ".join(f"{k}={v!r}" for k, v in q.items()) + ")" for q in queries
    )
    return f'python -c "import templateflow.api as tf; {calls}"'


#: Clients by (home, names of the files in its template folders): indexing a full TemplateFlow
#: home takes seconds, and a combined atlas asks for up to three atlases. A file added or
#: removed makes a new key, so a reused index is never stale (sizes are checked on disk).
_CLIENTS: dict[tuple, Any] = {}


def _client(home: Path, template: str) -> Any:
    """A ``TemplateFlowClient`` of ``home``, reused while the home's files stay the same.

    Importing ``templateflow.client`` runs templateflow's package set-up, which fills the home
    named by ``$TEMPLATEFLOW_HOME`` (or the default) if that is empty; pointing the variable at
    ``home`` during the first import keeps that set-up on the folder megafc is about to use.
    """
    if "templateflow.client" not in sys.modules:
        old = os.environ.get("TEMPLATEFLOW_HOME")
        os.environ["TEMPLATEFLOW_HOME"] = str(home)
        try:
            importlib.import_module("templateflow.client")  # templateflow's set-up runs here
        finally:
            if old is None:
                os.environ.pop("TEMPLATEFLOW_HOME", None)
            else:
                os.environ["TEMPLATEFLOW_HOME"] = old
    from templateflow.client import TemplateFlowClient

    key = _client_key(home)
    if key is None or key not in _CLIENTS:
        client = TemplateFlowClient(root=home)
        client.ls(template, suffix="dseg")  # index the home now (it may set up a missing home)
        key = _client_key(home)
        _CLIENTS.clear()  # one home at a time is enough
        _CLIENTS[key] = client
    return _CLIENTS[key]


def _client_key(home: Path) -> tuple | None:
    """The home and the names of the files in its template folders (a few thousand: milliseconds)."""
    try:
        names = [f"{d.name}/{f.name}" for d in os.scandir(home) if d.name.startswith("tpl-") and d.is_dir()
                 for f in os.scandir(d.path)]
    except OSError:
        return None
    return (str(home), tuple(sorted(names)))


def _usable(path: Optional[Path]) -> bool:
    return path is not None and path.is_file() and path.stat().st_size > 0


def _complete(path: Path) -> bool:
    """A downloaded file reads to its end (a truncated .nii.gz fails in gzip, a .tsv never does)."""
    if not path.name.endswith(".nii.gz"):
        return True
    import gzip

    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (OSError, EOFError):
        return False
    return True


def _pick(found: list[Path], expected: Path) -> Optional[Path]:
    """The expected file among the client's matches (e.g. res-1 as well as res-01), else the first."""
    if not found:
        return None
    for p in found:
        if p == expected:
            return p
    return sorted(found)[0]


def fetch_templateflow_atlas(
    what: str,
    template: str,
    atlas: str,
    desc: Optional[str],
    resolution: int,
    home: Optional[str] = None,
    download: bool = False,
    distributed: bool = True,
) -> TemplateFlowAtlas:
    """Find (and, if ``download``, download) one atlas's label image and table; check they agree.

    ``distributed``: TemplateFlow serves this atlas (Schaefer 2018). For atlases it does not
    serve (Tian, Buckner 2011) users copy the files into the home; the advice says so.
    """
    root = templateflow_home(home)
    queries = _queries(template, atlas, desc, resolution)
    expected = [root / n for n in file_names(template, atlas, desc, resolution)]
    download = download and distributed
    off = "automatic download is off (atlas.download=false)" if distributed else \
        "TemplateFlow does not distribute this atlas"
    if not download and (not root.is_dir() or not any(root.iterdir())):  # never set up a home implicitly
        _raise_missing(what, root, template, queries, expected, [], distributed,
                       f"the folder is {'empty' if root.is_dir() else 'missing'} and {off}")
    try:
        client = _client(root, template)
        found = [_pick(client.ls(template, **q), e) for q, e in zip(queries, expected)]
    except Exception as exc:  # pybids / templateflow raise many kinds on broken homes
        raise InputError(
            f"{what}: cannot read the TemplateFlow home '{root}' ({type(exc).__name__}: {_first_line(exc)}); "
            "set atlas.templateflow_home (or TEMPLATEFLOW_HOME) to a working TemplateFlow folder"
        ) from exc
    missing = [i for i, p in enumerate(found) if not _usable(p)]
    reason = off
    if missing and download:
        try:
            for i in missing:
                client.get(template, **queries[i])
        except Exception as exc:
            reason = f"downloading them from TemplateFlow failed ({type(exc).__name__}: {_first_line(exc)})"
        else:
            reason = "TemplateFlow does not list them (an outdated TemplateFlow home?)"
        found = [_pick(client.ls(template, **q), e) for q, e in zip(queries, expected)]
        for i in list(missing):  # templateflow streams into the final path: an interrupted download
            if _usable(found[i]) and not _complete(found[i]):  # leaves a truncated file behind
                found[i].unlink()
                reason = f"the download of {found[i].name} was incomplete (removed; run again)"
        missing = [i for i, p in enumerate(found) if not _usable(p)]
    if missing:
        placeholders = [found[i] for i in missing if found[i] is not None and found[i].is_file()]
        _raise_missing(what, root, template, [queries[i] for i in missing],
                       [found[i] or expected[i] for i in missing], placeholders, distributed, reason, download)
    image, table = found
    pairs = read_label_file(table, what)
    check_image_labels(image, [i for i, _ in pairs], what)
    return TemplateFlowAtlas(image=image, table=table, pairs=pairs, home=root, template=template)


def _raise_missing(what: str, root: Path, template: str, queries: list[dict[str, Any]], paths: list[Path],
                   placeholders: list[Path], distributed: bool, reason: str, tried: bool = False) -> None:
    """InputError naming the missing files, the template, why they are missing and how to provide them."""
    names = ", ".join(f"'{p}'" + (" (an empty placeholder, not downloaded yet)" if p in placeholders else "")
                      for p in paths)
    there = "that path" if len(paths) == 1 else "those paths"
    if distributed:
        how = (f"run once with network access{'' if tried else ' with atlas.download=true, or'}: "
               f"TEMPLATEFLOW_HOME='{root}' {_get_command(template, queries)}; or copy the files to {there}")
    else:
        how = (f"copy the files to {there} (a label image and a tab-separated table with columns index "
               "and name; see the atlas plugin's documentation)")
    raise InputError(
        f"{what}: the atlas files for template (space) {template} are not in the TemplateFlow home "
        f"'{root}': {reason}. Expected {names}. To provide them, {how}; or set atlas.templateflow_home "
        "(or TEMPLATEFLOW_HOME) to a TemplateFlow folder that has them"
    )


__all__ = [
    "FILE_SOURCES", "TEMPLATES", "FileOrTemplateFlowConfig", "TemplateFlowAtlas", "check_file_or_templateflow",
    "check_source_and_template", "fetch_templateflow_atlas", "file_names", "load_file_or_templateflow",
    "require_key", "templateflow_home",
]
