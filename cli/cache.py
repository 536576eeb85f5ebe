"""``megafc-cache``: see and clear the extraction cache (``extraction.cache_dir``).

    megafc-cache info  [DIR]     # cached scans, remembered file hashes, size
    megafc-cache clear [DIR]     # remove them (only what megafc wrote there)
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
from pathlib import Path

from megafc.core.config import ExtractionConfig
from megafc.core.errors import InputError
from megafc.core.extraction import HASHES

#: A cache entry is a folder named by its 64-hex extraction key.
ENTRY = re.compile(r"^[0-9a-f]{64}$")


def cache_contents(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(extraction entries, remembered hashes, other files) in a cache folder."""
    if not folder.exists():
        raise InputError(f"cache folder {folder} does not exist (config key 'extraction.cache_dir')")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; expected megafc's extraction cache")
    entries, other = [], []
    for p in folder.iterdir():
        if p.is_dir() and ENTRY.match(p.name):
            entries.append(p)
        elif p.name != HASHES:
            other.append(p)
    hashes = sorted((folder / HASHES).glob("*.json")) if (folder / HASHES).is_dir() else []
    return sorted(entries), hashes, sorted(other)


def size_of(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


def main(argv: list[str] | None = None) -> None:
    from .app import fail

    ap = argparse.ArgumentParser(prog="megafc-cache", description="See or clear megafc's extraction cache.")
    ap.add_argument("action", choices=["info", "clear"])
    ap.add_argument("folder", nargs="?", default=ExtractionConfig.cache_dir,
                    help=f"the cache folder (default: {ExtractionConfig.cache_dir})")
    args = ap.parse_args(argv)
    folder = Path(args.folder).expanduser()
    megafc_log = logging.getLogger("megafc")
    if not megafc_log.handlers:  # fail() logs the error too; print it only once
        megafc_log.addHandler(logging.NullHandler())
        megafc_log.propagate = False
    if args.action == "info" and not folder.exists():  # nothing extracted yet: an empty cache
        print(f"{folder}: no cache yet (0 cached scan extractions; it is made by the first run that extracts)")
        return
    try:
        entries, hashes, other = cache_contents(folder)
        mb = size_of(entries + hashes) / 1e6
        if args.action == "info":
            print(f"{folder}: {len(entries)} cached scan extractions, {len(hashes)} remembered file hashes, {mb:.1f} MB")
            if other:
                print(f"  ({len(other)} other entries not written by megafc, e.g. {other[0].name})")
            return
        for p in entries:
            shutil.rmtree(p)
        shutil.rmtree(folder / HASHES, ignore_errors=True)
        print(f"{folder}: removed {len(entries)} cached scan extractions and {len(hashes)} remembered file hashes "
              f"({mb:.1f} MB)" + (f"; left {len(other)} entries megafc did not write" if other else ""))
    except Exception as exc:
        fail(exc, writes=False)
