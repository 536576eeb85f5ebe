"""Shared file handling of the real-atlas plugins: label files, label images, nilearn fetches.

Nothing here is a plugin; the atlas modules use these so that every atlas reads label files
the same way, checks its image against its region table, and reports missing downloads alike.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from megafc.core import InputError

#: First lines of one-label-per-line files that name the background (value 0), not a region.
BACKGROUND_NAMES = ("background", "none", "unknown", "???")

REFERENCES: dict[str, str] = {
    "schaefer": (
        "Schaefer A, Kong R, Gordon EM, Laumann TO, Zuo XN, Holmes AJ, Eickhoff SB, Yeo BTT "
        "(2018) Local-global parcellation of the human cerebral cortex from intrinsic functional "
        "connectivity MRI. Cereb Cortex 28:3095-3114"
    ),
    "yeo": (
        "Yeo BTT, Krienen FM, Sepulcre J, Sabuncu MR, Lashkari D, Hollinshead M, Roffman JL, "
        "Smoller JW, Zollei L, Polimeni JR, Fischl B, Liu H, Buckner RL (2011) The organization "
        "of the human cerebral cortex estimated by intrinsic functional connectivity. "
        "J Neurophysiol 106:1125-1165"
    ),
    "tian": (
        "Tian Y, Margulies DS, Breakspear M, Zalesky A (2020) Topographic organization of the "
        "human subcortex unveiled with functional connectivity gradients. Nat Neurosci "
        "23:1421-1432"
    ),
    "buckner": (
        "Buckner RL, Krienen FM, Castellanos A, Diaz JC, Yeo BTT (2011) The organization of the "
        "human cerebellum estimated by intrinsic functional connectivity. J Neurophysiol "
        "106:2322-2345"
    ),
    "seitzman": (
        "Seitzman BA, Gratton C, Marek S, Raut RV, Dosenbach NUF, Schlaggar BL, Petersen SE, "
        "Greene DJ (2020) A set of functionally-defined brain regions with improved "
        "representation of the subcortex and cerebellum. NeuroImage 206:116290"
    ),
    "power": (
        "Power JD, Cohen AL, Nelson SM, Wig GS, Barnes KA, Church JA, Vogel AC, Laumann TO, "
        "Miezin FM, Schlaggar BL, Petersen SE (2011) Functional network organization of the "
        "human brain. Neuron 72:665-678"
    ),
    "dosenbach": (
        "Dosenbach NUF, Nardos B, Cohen AL, Fair DA, Power JD, Church JA, Nelson SM, Wig GS, "
        "Vogel AC, Lessov-Schlaggar CN, Barnes KA, Dubis JW, Feczko E, Coalson RS, Pruett JR, "
        "Barch DM, Petersen SE, Schlaggar BL (2010) Prediction of individual brain maturity "
        "using fMRI. Science 329:1358-1361"
    ),
}


def require_file(path: str | None, key: str, what: str) -> Path:
    """An existing file named by config ``key``; InputError naming key and path otherwise."""
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise InputError(f"{what}: file '{p}' (config key '{key}') does not exist")
    return p


def read_label_file(path: str | Path, what: str) -> list[tuple[int, str]]:
    """(image value, label) pairs of a label file, sorted by value; value 0 is left out.

    Three layouts are read (blank lines and lines starting with ``#`` are skipped):

    - one label per line (Tian's ``*_label.txt``): line k is image value k; a first line
      named Background/NONE/Unknown is value 0;
    - ``<value> <label> [more columns]`` separated by tabs, commas or spaces, without header
      (Schaefer's ``*_order.txt``, FreeSurfer-style colour tables such as Buckner's);
    - a table with a header line naming columns ``index`` and ``label`` (or ``name``).
    """
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{what}: cannot read label file '{p}': {exc}") from exc
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise InputError(f"{what}: label file '{p}' has no labels")

    sep = "\t" if any("\t" in ln for ln in lines) else "," if all("," in ln for ln in lines) else None

    def split(line: str) -> list[str]:
        return [f.strip() for f in line.split(sep)] if sep else line.split()

    rows = [split(ln) for ln in lines]
    header = [f.lower() for f in rows[0]]
    pairs: list[tuple[int, str]] = []
    if "index" in header and ("label" in header or "name" in header):
        i_col = header.index("index")
        l_col = header.index("label") if "label" in header else header.index("name")
        for n, fields in enumerate(rows[1:], start=2):
            if len(fields) <= max(i_col, l_col):
                raise InputError(f"{what}: label file '{p}', data line {n} has too few columns: {lines[n - 1]!r}")
            pairs.append((_as_index(fields[i_col], p, n, what), fields[l_col]))
    elif all(len(f) >= 2 for f in rows) and all(_is_int(f[0]) for f in rows):
        pairs = [(int(f[0]), f[1]) for f in rows]
    elif all(len(f) == 1 for f in rows):
        labels = [f[0] for f in rows]
        start = 0 if labels[0].lower() in BACKGROUND_NAMES else 1
        pairs = [(start + k, lab) for k, lab in enumerate(labels)]
    else:
        raise InputError(
            f"{what}: label file '{p}' is neither one label per line, '<value> <label> ...' "
            "lines, nor a table with 'index' and 'label' columns"
        )
    pairs = [(i, lab) for i, lab in pairs if i != 0]
    values = [i for i, _ in pairs]
    if any(i < 0 for i in values):
        raise InputError(f"{what}: label file '{p}' has negative image values {sorted(i for i in values if i < 0)}")
    dup = sorted({i for i in values if values.count(i) > 1})
    if dup:
        raise InputError(f"{what}: label file '{p}' lists image value(s) {dup[:5]} more than once")
    if not pairs:
        raise InputError(f"{what}: label file '{p}' has no region labels (only background)")
    return sorted(pairs)


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def _as_index(s: str, p: Path, line: int, what: str) -> int:
    if not _is_int(s):
        raise InputError(f"{what}: label file '{p}', line {line}: index {s!r} is not an integer")
    return int(s)


def local_label_regions(
    image: str | None, labels: str | None, parse: Callable[[str], dict], what: str
) -> tuple[Path, pd.DataFrame]:
    """A local label image + label file -> (image path, region table with ``index``), checked
    against each other; ``parse`` turns one label into its network columns."""
    image_path = require_file(image, "atlas.image", what)
    pairs = read_label_file(require_file(labels, "atlas.labels", what), what)
    try:
        regions = pd.DataFrame([{"index": index, **parse(label)} for index, label in pairs])
    except InputError as exc:
        raise InputError(f"{what}: label file '{labels}': {exc}") from exc
    check_image_labels(image_path, list(regions["index"]), what)
    return image_path, regions


def load_label_image(path: str | Path, what: str) -> tuple[Any, np.ndarray]:
    """(3D image, integer data) of a label image; trailing singleton dimensions are dropped."""
    import nibabel as nib

    p = Path(path)
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise InputError(f"{what}: cannot read label image '{p}': {type(exc).__name__}: {exc}") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{what}: label image '{p}' must be 3D, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise InputError(f"{what}: label image '{p}' has non-integer values (not a label image)")
        data = rounded
    data = data.astype(np.int64)
    img3d = nib.Nifti1Image(data.astype(np.int32), img.affine)
    return img3d, data


def check_image_labels(path: str | Path, indices: list[int], what: str, data: np.ndarray | None = None) -> None:
    """The image's non-zero values must be exactly the region table's ``index`` values."""
    if data is None:
        _, data = load_label_image(path, what)
    present = set(np.unique(data).tolist()) - {0}
    listed = set(int(i) for i in indices)
    unlisted = sorted(present - listed)
    if unlisted:
        raise InputError(
            f"{what}: label image '{path}' has value(s) {unlisted[:10]} that its label file "
            "does not name (do the image and the label file belong together?)"
        )
    empty = sorted(listed - present)
    if empty:
        raise InputError(
            f"{what}: label(s) with value(s) {empty[:10]} have no voxels in label image '{path}' "
            "(do the image and the label file belong together?)"
        )


def nilearn_search_dirs(data_dir: str | None) -> list[Path]:
    """Where nilearn looks for datasets: ``data_dir`` alone if given, else its defaults."""
    if data_dir:
        return [Path(data_dir).expanduser()]
    from nilearn.datasets import get_data_dirs

    return [Path(d).expanduser() for d in get_data_dirs()]


def fetch_with_nilearn(
    what: str,
    dataset: str,
    files: list[str],
    fetch: Callable[[str | None], Any],
    data_dir: str | None,
    download: bool,
    key_prefix: str = "atlas",
) -> Any:
    """Run a nilearn fetcher, offline when its files are already on disk.

    ``files`` are the paths the fetcher needs inside ``<dir>/<dataset>/``; ``fetch(data_dir)``
    calls the fetcher. If some search directory holds all of them the fetcher is pointed at it
    (nilearn then reads instead of downloading). Otherwise, if ``download``, the fetcher may
    download; when that fails, folders it left empty are removed and an InputError says which
    files are missing, where megafc looked and how to provide them.
    """
    dirs = nilearn_search_dirs(data_dir)
    for base in dirs:
        if all((base / dataset / f).is_file() for f in files):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return fetch(str(base))
            except Exception as exc:
                raise InputError(
                    f"{what}: reading the files in '{base / dataset}' failed "
                    f"({type(exc).__name__}: {_first_line(exc)}); they may be damaged: delete them "
                    "and run once with network access to download them again"
                ) from exc
    reason = f"automatic download is off ({key_prefix}.download=false)"
    if download:
        existed = {p: p.exists() for base in dirs for p in (base, base / dataset)}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fetch(data_dir)
        except Exception as exc:
            for path, was_there in existed.items():
                if not was_there:
                    _remove_empty_tree(path)
            reason = f"downloading them failed ({type(exc).__name__}: {_first_line(exc)})"
    where = " or ".join(f"'{b / dataset}'" for b in dirs)
    missing = sorted({f for f in files for b in dirs if not (b / dataset / f).is_file()})
    raise InputError(
        f"{what}: the atlas files are not on this computer and {reason}. megafc looked in "
        f"{where} for {', '.join(missing)}. To provide them, run once with network access "
        f"(nilearn downloads them to '{dirs[0] / dataset}'), or copy the files into a folder "
        f"'<dir>/{dataset}/' and pass {key_prefix}.data_dir=<dir>"
    )


def _first_line(exc: BaseException) -> str:
    """A short account of a failure: the host that could not be reached, or the first line."""
    import re

    text = str(exc).strip()
    host = re.search(r"host='([^']+)'", text)
    if host:
        return f"cannot reach {host.group(1)}"
    text = text.splitlines()[0] if text else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _remove_empty_tree(path: Path) -> None:
    """Remove ``path`` if it holds nothing but empty folders (and nilearn's README.md)."""
    if not path.is_dir():
        return
    for root, _dirs, names in os.walk(path, topdown=False):
        root_p = Path(root)
        if names == ["README.md"] and root_p == path:
            (root_p / "README.md").unlink(missing_ok=True)
        try:
            root_p.rmdir()
        except OSError:
            pass  # not empty: leave it


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{''.join(path.suffixes)}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


__all__ = [
    "REFERENCES", "check_image_labels", "fetch_with_nilearn", "load_label_image",
    "nilearn_search_dirs", "read_label_file", "require_file", "write_atomic",
]
