"""The metadata table shared by the ``fmriprep``, ``timeseries`` and ``connectomes`` datasets.

A TSV with one row per scan and columns ``dataset``, ``subject``, ``session``, ``drug``,
``condition`` (drug / placebo / baseline), optional ``dose``, ``run``, ``minutes_since_dose``,
``session_order`` (the scan's place in its subject's sessions, 1 = first), ``mean_fd``, and
optional ``path`` (the scan's file, relative to the table). ``sub-``/``ses-``
prefixes are accepted and stripped. Where the table has no ``session_order``, the raw BIDS
datasets' acquisition times can give it (:func:`session_order_from_acq_times`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from megafc.core import ConfigError, InputError, fingerprint_file, validate_scans

log = logging.getLogger("megafc")

REQUIRED = ("dataset", "subject", "session", "drug", "condition")
OPTIONAL = ("dose", "run", "minutes_since_dose", "session_order", "mean_fd", "path", "task")


def read_metadata(path: str | Path, roots: dict[str, str] | None = None) -> pd.DataFrame:
    """Read and check the metadata table; paths become absolute; errors name the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"metadata table not found: {path} (config key 'dataset.metadata')")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=["", "n/a", "NA"])
    except Exception as exc:
        raise InputError(f"{path}: not a readable TSV ({exc})") from exc
    check_header(path, [str(c) for c in table.columns])
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; a metadata table needs {list(REQUIRED)}")
    if table.empty:
        raise InputError(f"{path}: the table has a header but no rows; expected one row per scan")
    table["subject"] = table["subject"].str.removeprefix("sub-")
    table["session"] = table["session"].str.removeprefix("ses-")
    if "run" in table.columns:
        table["run"] = table["run"].str.removeprefix("run-")
    key = [c for c in ("dataset", "subject", "session", "run") if c in table.columns]
    dup = table[table.duplicated(key, keep=False)]
    if len(dup):
        rows = (dup.index[:6] + 2).tolist()
        raise InputError(f"{path}: duplicate rows for the same scan ({'/'.join(key)}) at lines {rows}")
    for col in ("dose", "minutes_since_dose", "session_order", "mean_fd"):
        if col in table.columns:
            bad = pd.to_numeric(table[col], errors="coerce").isna() & table[col].notna()
            if bad.any():
                raise InputError(f"{path}: column '{col}' has non-numeric value(s) {table.loc[bad, col].tolist()[:5]}")
            table[col] = pd.to_numeric(table[col])
    for col in ("dose", "mean_fd"):  # minutes_since_dose may be negative (a scan before the dose)
        if col in table.columns and (table[col] < 0).any():
            lines = (table.index[table[col] < 0][:5] + 2).tolist()
            raise InputError(f"{path}: column '{col}' has negative value(s) at lines {lines}; expected >= 0")
    table.attrs["first_line"] = 2  # rows are named by their line in the file (the header is line 1)
    scans = validate_scans(table, source=str(path))
    if roots is not None:
        # a scan without a path is found under its dataset's root: every such scan needs one
        no_path = scans["path"].isna() if "path" in scans.columns else pd.Series(True, index=scans.index)
        rootless = no_path & ~scans["dataset"].isin(list(roots))
        if rootless.any():
            unknown = sorted(set(scans.loc[rootless, "dataset"]))
            lines = (scans.index[rootless][:6] + 2).tolist()
            raise InputError(
                f"{path}: dataset(s) {unknown} have no entry in config key 'dataset.roots' "
                f"(known: {sorted(roots)}) and "
                + ("the table has no 'path' column" if "path" not in scans.columns
                   else f"line(s) {lines} leave 'path' empty") + "; give each scan a path or its dataset a root"
            )
    if "path" in scans.columns:
        resolved = []
        for i, p in enumerate(scans["path"]):
            if pd.isna(p):
                resolved.append(None)
                continue
            full = (path.parent / p).resolve() if not Path(p).is_absolute() else Path(p)
            if not full.exists():
                raise InputError(f"{path}: line {i + 2} points to a missing file: {p} (looked for {full})")
            resolved.append(str(full))
        scans["path"] = resolved
    return scans


def check_header(path: Path, columns: list[str]) -> None:
    """Refuse a header that names a column twice (pandas would read the second as 'drug.1');
    warn about a column that looks like a misspelt one megafc reads, which would otherwise be
    carried along unread (e.g. 'meanfd': no motion adjustment, and nothing said)."""
    import difflib

    # the header as written (pandas renames a repeated name to 'drug.1'); read by pandas so that
    # a gzipped table works too; blank names (a spreadsheet's trailing tabs) are not columns
    header = [str(c).strip() for c in pd.read_csv(path, sep="\t", header=None, nrows=1, dtype=str,
                                                  keep_default_na=False, encoding="utf-8-sig").iloc[0]]
    twice = sorted({c for c in header if c and header.count(c) > 1})
    if twice:
        raise InputError(f"{path}: the header names column(s) {twice} more than once; expected each column once")
    known = [*REQUIRED, *OPTIONAL]
    for column in columns:
        close = difflib.get_close_matches(column.lower(), known, n=1, cutoff=0.8)
        if column not in known and close and close[0] not in columns:
            log.warning("%s: column '%s' is not one megafc reads; did you mean '%s'? It is carried into "
                        "scans.tsv unread", path, column, close[0])


def find_bids_file(root: str | Path, subject: str, session: str, suffix: str, required: dict[str, str],
                   run: str | None = None, what: str = "file") -> Path:
    """One file under a BIDS(-derivatives) root matching entities, e.g. suffix 'desc-preproc_bold.nii.gz'."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"derivatives folder not found: {root} (config key 'dataset.roots')")
    pattern = f"sub-{subject}_*{suffix}"
    candidates = [p for p in root.glob(f"sub-{subject}/**/{pattern}")]
    ents = {"ses": session, **required}
    if run:
        ents["run"] = run
    hits = [p for p in candidates if all(f"_{k}-{v}_" in f"_{p.name}" for k, v in ents.items() if v)]
    if not hits:
        wanted = "_".join(f"{k}-{v}" for k, v in ents.items() if v)
        raise InputError(
            f"no {what} for sub-{subject} ({wanted}, *{suffix}) under {root}"
        )
    if len(hits) > 1:
        raise InputError(
            f"several {what}s match sub-{subject} ses-{session} under {root}: {[h.name for h in hits[:4]]}; "
            "add a 'run' column or a 'path' column to the metadata table"
        )
    return hits[0]


def check_distinct_files(files: dict[str, Path], table: str | Path, what: str = "file") -> None:
    """Refuse two scans read from one file (by path, symlink or hard link).

    A drug scan and its control pointing to the same file give a difference of exactly 0,
    which silently pulls the dataset's effect toward zero.
    """
    seen: dict[object, tuple[str, Path]] = {}
    for scan_id, path in files.items():
        try:
            st = os.stat(path)
            key: object = (st.st_dev, st.st_ino)
        except OSError:
            key = os.path.realpath(path)
        if key in seen:
            first, first_path = seen[key]
            also = f" (also reached as {first_path})" if str(first_path) != str(path) else ""
            raise InputError(
                f"{table}: scans '{first}' and '{scan_id}' point to the same {what} {path}{also}; every scan "
                "needs its own file (a scan compared with itself would count as a difference of exactly 0)"
            )
        seen[key] = (scan_id, path)


def check_distinct_contents(digests: dict[str, str], table: str | Path, what: str = "file") -> None:
    """Refuse two scans whose files have identical content (a copied file is the same scan)."""
    seen: dict[str, str] = {}
    for scan_id, digest in digests.items():
        if digest in seen:
            raise InputError(
                f"{table}: scans '{seen[digest]}' and '{scan_id}' have byte-identical {what}s ({digest[:19]}...); "
                "every scan needs its own data (was a file copied in place of another?)"
            )
        seen[digest] = scan_id


def session_order_from_acq_times(scans: pd.DataFrame, bids_roots: dict[str, str],
                                 key: str = "dataset.bids_roots") -> tuple[pd.DataFrame, dict[str, str], str]:
    """Each scan's ``session_order`` from its raw BIDS dataset's acquisition times, for the
    subjects the metadata table gives none: (scans, fingerprints of the files read, a sentence
    for the dataset's description; "" when nothing was read).

    fMRIPrep's derivatives do not keep the acquisition times; the raw dataset does, per session
    in ``sub-<label>/sub-<label>_sessions.tsv`` (column ``acq_time``) or per file in each
    session's ``scans.tsv``, whose earliest time is taken as the session's. Sessions are ranked
    by time among all of the subject's listed sessions (1 = first), so a session without a
    resting scan still counts. A subject gets no order at all, and a warning says why, when any
    of its listed sessions has no time (the ranks could be off by it), when two of its analysed
    sessions have the same time (date-only times of a same-day pre/post design), when its raw
    folder is missing, or when the table orders some of its scans but not all (two scales of
    order in one subject); a pooling model then treats the column as incomplete. Times without
    a zone are taken as UTC, as those with BIDS's trailing Z are; an unreadable time names its
    file.
    """
    roots = {str(k): Path(str(v)).expanduser() for k, v in (bids_roots or {}).items()}
    if not roots:
        return scans, {}, ""
    unknown = sorted(set(roots) - set(scans["dataset"]))
    if unknown:
        raise ConfigError(f"config key '{key}' names dataset(s) {unknown} that are not in the metadata table "
                          f"(its datasets: {sorted(scans['dataset'].unique())})")
    for ds, root in roots.items():
        if not root.is_dir():
            raise InputError(f"raw BIDS folder of dataset {ds} not found: {root} (config key '{key}')")
    scans = scans.copy()
    given = scans["session_order"] if "session_order" in scans else pd.Series(float("nan"), index=scans.index)
    order = pd.to_numeric(given, errors="coerce").astype(float)
    fingerprints: dict[str, str] = {}
    filled = 0
    for (ds, subject), rows in scans[scans["dataset"].isin(roots)].groupby(["dataset", "subject"], sort=True):
        empty = order.loc[rows.index].isna()
        if not empty.any():
            continue
        if not empty.all():  # two scales of order in one subject would compare nothing
            log.warning("dataset %s, sub-%s: the metadata table orders some of its scans but not all; the others get "
                        "no session_order from acquisition times (%s)", ds, subject, key)
            continue
        where = roots[ds] / f"sub-{subject}"
        rank, why = _session_ranks(where, str(subject), set(rows["session"].astype(str)), fingerprints)
        if why:
            log.warning("dataset %s, sub-%s: %s (%s); its scans have no session_order from acquisition times",
                        ds, subject, why, where)
            continue
        order.loc[rows.index] = rows["session"].astype(str).map(rank).astype(float)
        filled += len(rows)
    if not filled:
        return scans, fingerprints, ""
    scans["session_order"] = order
    log.info("session_order: %d scans ordered by their sessions' acquisition times (%s)", filled, key)
    return scans, fingerprints, (f"Session order of {filled} scans from the raw BIDS datasets' acquisition times "
                                 f"({', '.join(sorted(roots))}).")


def _session_ranks(sub: Path, subject: str, analysed: set[str],
                   fingerprints: dict[str, str]) -> tuple[dict[str, int], str]:
    """(session label -> rank by acquisition time, "") of one subject, or ({}, why not)."""
    if not sub.is_dir():
        return {}, "no raw folder for the subject"
    times, listed = _session_times(sub, subject, fingerprints)
    untimed = sorted((listed | analysed) - set(times))
    if untimed:
        return {}, f"no acquisition time for session(s) {untimed} (sessions.tsv or scans.tsv acq_time)"
    rank = pd.Series(times).rank(method="min").astype(int)
    tied = [label for label in sorted(analysed) if (rank == rank[label]).sum() > 1]
    if tied:
        return {}, f"sessions {tied} have the same acquisition time"
    return rank.to_dict(), ""


def _session_times(sub: Path, subject: str, fingerprints: dict[str, str]) -> tuple[dict[str, pd.Timestamp], set[str]]:
    """(session label -> acquisition time, every session label the subject's files list): the
    time from sessions.tsv, else the earliest acq_time in the session's scans.tsv."""
    times: dict[str, pd.Timestamp] = {}
    listed: set[str] = set()
    sessions = sub / f"sub-{subject}_sessions.tsv"
    if sessions.is_file():
        table = _acq_table(sessions, "session_id", fingerprints)
        table = table[table["session_id"].notna()]
        for label, t in zip(table["session_id"].str.removeprefix("ses-"), table["acq_time"]):
            listed.add(label)
            if pd.notna(t):
                times[label] = t
    for scans_tsv in sorted(sub.glob(f"ses-*/sub-{subject}_ses-*_scans.tsv")):
        label = scans_tsv.parent.name.removeprefix("ses-")
        listed.add(label)
        if label in times:
            continue
        first = _acq_table(scans_tsv, "filename", fingerprints)["acq_time"].min()
        if pd.notna(first):
            times[label] = first
    return times, listed


def _acq_table(path: Path, id_column: str, fingerprints: dict[str, str]) -> pd.DataFrame:
    """A BIDS sessions.tsv or scans.tsv with its acq_time parsed (ISO 8601; n/a allowed)."""
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=["", "n/a"])
    except Exception as exc:
        raise InputError(f"{path}: not a readable TSV ({exc})") from exc
    if id_column not in table.columns:
        raise InputError(f"{path}: no '{id_column}' column (a BIDS {path.name.rsplit('_', 1)[-1]} file needs one)")
    fingerprints[str(path)] = fingerprint_file(path)
    if "acq_time" not in table.columns:
        table["acq_time"] = pd.NaT
        return table
    parsed = pd.to_datetime(table["acq_time"], format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna() & table["acq_time"].notna()
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise InputError(f"{path}: line {i + 2}: acq_time '{table['acq_time'].iloc[i]}' is not a BIDS date-time "
                         "(YYYY-MM-DDThh:mm:ss)")
    table["acq_time"] = parsed
    return table
