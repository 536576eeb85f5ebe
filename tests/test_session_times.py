"""session_order from the raw BIDS datasets' acquisition times (config key dataset.bids_roots)."""

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmriprep_tree import make_tree
from megafc.core import ConfigError, InputError
from megafc.plugins.datasets.fmriprep import FmriprepDataset
from megafc.plugins.datasets.metadata import read_metadata, session_order_from_acq_times


def metadata(tmp_path: Path, rows: list[tuple], session_order: list | None = None) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=["dataset", "subject", "session", "drug", "condition"])
    if session_order is not None:
        table["session_order"] = session_order
    path = tmp_path / "metadata.tsv"
    table.to_csv(path, sep="\t", index=False, na_rep="n/a")
    return read_metadata(path)


def sessions_tsv(root: Path, subject: str, times: dict[str, str]) -> Path:
    path = root / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"session_id": [f"ses-{k}" for k in times], "acq_time": list(times.values())}).to_csv(
        path, sep="\t", index=False)
    return path


def scans_tsv(root: Path, subject: str, session: str, times: list[str]) -> Path:
    path = root / f"sub-{subject}" / f"ses-{session}" / f"sub-{subject}_ses-{session}_scans.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"func/sub-{subject}_ses-{session}_task-rest_run-{i + 1}_bold.nii.gz" for i in range(len(times))]
    pd.DataFrame({"filename": names, "acq_time": times}).to_csv(path, sep="\t", index=False)
    return path


ROWS = [("A", "01", "PLCB", "LSD", "placebo"), ("A", "01", "LSD", "LSD", "drug"),
        ("A", "02", "PLCB", "LSD", "placebo"), ("A", "02", "LSD", "LSD", "drug"),
        ("B", "01", "pre", "DMT", "baseline"), ("B", "01", "post", "DMT", "drug")]


def order_of(scans: pd.DataFrame) -> dict[tuple[str, str, str], float]:
    return {(r.dataset, r.subject, r.session): r.session_order for r in scans.itertuples()}


def test_sessions_are_ranked_by_acquisition_time_not_by_label(tmp_path):
    """Labels that name the condition say nothing of order: sub-01 had LSD first, sub-02 placebo
    first; a screening session without a resting scan still counts; scans.tsv stands in where
    a subject has no sessions.tsv (its earliest file's time, on a date-shifted anonymised year)."""
    raw_a, raw_b = tmp_path / "rawA", tmp_path / "rawB"
    files = [sessions_tsv(raw_a, "01", {"screen": "2019-03-01T09:00:00", "PLCB": "2019-04-02T10:00:00",
                                        "LSD": "2019-03-18T10:30:00"}),
             sessions_tsv(raw_a, "02", {"PLCB": "2019-05-01T10:00:00Z", "LSD": "2019-05-15T10:00:00Z"}),
             scans_tsv(raw_b, "01", "pre", ["1858-01-01T11:40:00", "1858-01-01T11:05:00"]),
             scans_tsv(raw_b, "01", "post", ["1858-01-01T13:10:00"])]
    scans, fingerprints, note = session_order_from_acq_times(metadata(tmp_path, ROWS), {"A": raw_a, "B": raw_b})
    assert order_of(scans) == {("A", "01", "PLCB"): 3, ("A", "01", "LSD"): 2, ("A", "02", "PLCB"): 1,
                               ("A", "02", "LSD"): 2, ("B", "01", "pre"): 1, ("B", "01", "post"): 2}
    assert sorted(fingerprints) == sorted(str(f) for f in files)  # the run's inputs include what ordered it
    assert "Session order of 6 scans" in note


def test_the_metadata_tables_own_order_wins_and_gaps_are_filled(tmp_path):
    raw = tmp_path / "raw"
    sessions_tsv(raw, "01", {"PLCB": "2020-01-02T10:00:00", "LSD": "2020-01-01T10:00:00"})
    sessions_tsv(raw, "02", {"PLCB": "2020-01-01T10:00:00", "LSD": "2020-01-09T10:00:00"})
    given = [7, 8, np.nan, np.nan, 1, 2]
    scans, _, _ = session_order_from_acq_times(metadata(tmp_path, ROWS, given), {"A": raw})
    got = order_of(scans)
    assert (got[("A", "01", "PLCB")], got[("A", "01", "LSD")]) == (7, 8)  # as the table says
    assert (got[("A", "02", "PLCB")], got[("A", "02", "LSD")]) == (1, 2)


@pytest.mark.parametrize("case, why", [
    ("untimed", r"no acquisition time for session\(s\) \['LSD'\]"),
    ("untimed_unanalysed", r"no acquisition time for session\(s\) \['mid'\]"),  # the ranks could be off by it
    ("same_day", r"sessions \['LSD', 'PLCB'\] have the same acquisition time"),  # date-only times
    ("no_folder", "no raw folder for the subject"),
    ("partly_given", "the metadata table orders some of its scans but not all"),
])
def test_a_subject_whose_order_is_unsure_gets_none_and_a_warning(tmp_path, caplog, case, why):
    """sub-01 is the unsure one, for the reason in ``case``; sub-02 is ordered as usual."""
    raw = tmp_path / "raw"
    times = {"untimed": {"PLCB": "2020-01-02T10:00:00", "LSD": "n/a"},
             "untimed_unanalysed": {"PLCB": "2020-01-02T10:00:00", "mid": "n/a", "LSD": "2020-01-09T10:00:00"},
             "same_day": {"PLCB": "2020-01-02", "LSD": "2020-01-02"}}.get(case, {"PLCB": "2020-01-02T10:00:00",
                                                                               "LSD": "2020-01-01T10:00:00"})
    if case != "no_folder":
        sessions_tsv(raw, "01", times)
    sessions_tsv(raw, "02", {"PLCB": "2020-01-01T10:00:00", "LSD": "2020-01-09T10:00:00"})
    given = [5, np.nan, np.nan, np.nan, np.nan, np.nan] if case == "partly_given" else None
    with caplog.at_level(logging.WARNING, logger="megafc"):
        scans, _, _ = session_order_from_acq_times(metadata(tmp_path, ROWS, given), {"A": raw})
    got = order_of(scans)
    assert np.isnan(got[("A", "01", "LSD")]) and (got[("A", "01", "PLCB")] == 5 if case == "partly_given"
                                                  else np.isnan(got[("A", "01", "PLCB")]))
    assert (got[("A", "02", "PLCB")], got[("A", "02", "LSD")]) == (1, 2)
    assert np.isnan(got[("B", "01", "pre")])  # dataset B has no raw folder
    warned = [r.getMessage() for r in caplog.records if "sub-01" in r.getMessage()]
    assert len(warned) == 1 and re.search(why, warned[0]), warned


@pytest.mark.parametrize("problem, error, match", [
    ("bad_time", InputError, r"sub-01_sessions\.tsv: line 3: acq_time 'yesterday' is not a BIDS date-time"),
    ("no_id", InputError, r"sub-01_sessions\.tsv: no 'session_id' column"),
    ("unknown_dataset", ConfigError, r"config key 'dataset\.bids_roots' names dataset\(s\) \['C'\]"),
    ("missing_folder", InputError, r"raw BIDS folder of dataset A not found: .*nowhere"),
])
def test_bad_acquisition_times_name_the_file_or_key(tmp_path, problem, error, match):
    raw = tmp_path / "raw"
    path = sessions_tsv(raw, "01", {"PLCB": "2020-01-02T10:00:00", "LSD": "yesterday" if problem == "bad_time"
                                    else "2020-01-01T10:00:00"})
    if problem == "no_id":
        pd.read_csv(path, sep="\t").rename(columns={"session_id": "session"}).to_csv(path, sep="\t", index=False)
    roots = {"A": str(raw), "C": str(raw)} if problem == "unknown_dataset" else {"A": str(raw)}
    if problem == "missing_folder":
        roots = {"A": str(tmp_path / "nowhere")}
    with pytest.raises(error, match=match):
        session_order_from_acq_times(metadata(tmp_path, ROWS), roots)


def test_fmriprep_dataset_reads_the_raw_datasets_times(tmp_path):
    """Through the ``fmriprep`` dataset: its scan table gets the column, its fingerprints the
    files, its description the sentence (the methods text quotes it)."""
    tree = make_tree(tmp_path / "data", n_subjects=2, n_volumes=20)
    raw = tmp_path / "raw_siteA"
    sessions_tsv(raw, "01", {"1": "2021-06-01T09:00:00", "2": "2021-06-08T09:00:00"})
    sessions_tsv(raw, "02", {"1": "2021-06-20T09:00:00", "2": "2021-06-03T09:00:00"})
    plugin = FmriprepDataset(FmriprepDataset.Config(metadata=str(tree.metadata),
                                                    roots={k: str(v) for k, v in tree.roots.items()},
                                                    bids_roots={"siteA": str(raw)}))
    inputs = plugin.load(None, 0)
    got = order_of(inputs.scans)
    assert (got[("siteA", "01", "1")], got[("siteA", "01", "2")]) == (1, 2)
    assert (got[("siteA", "02", "1")], got[("siteA", "02", "2")]) == (2, 1)
    assert np.isnan(got[("siteB", "01", "1")])
    assert str(raw / "sub-02" / "sub-02_sessions.tsv") in inputs.fingerprints
    assert "Session order of 4 scans from the raw BIDS datasets' acquisition times (siteA)" in inputs.description
