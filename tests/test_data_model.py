import pandas as pd
import pytest

from megafc.core import SCAN_COLUMNS, Atlas, InputError, exclude, validate_scans


def scans(**extra):
    base = {
        "dataset": ["a", "a", "b"],
        "subject": ["01", "01", "01"],
        "session": ["1", "2", "1"],
        "drug": ["LSD", "LSD", "DMT"],
        "condition": ["drug", "placebo", "drug"],
    }
    base.update(extra)
    return pd.DataFrame(base)


def test_validate_fills_schema_and_ids():
    out = validate_scans(scans())
    assert list(out.columns[: len(SCAN_COLUMNS)]) == list(SCAN_COLUMNS)
    assert out["scan_id"].tolist() == ["ds-a_sub-01_ses-1", "ds-a_sub-01_ses-2", "ds-b_sub-01_ses-1"]
    assert not out["excluded"].any() and out["dose"].isna().all()


def test_unknown_condition_is_named():
    with pytest.raises(InputError, match=r"condition.*'active'"):
        validate_scans(scans(condition=["drug", "active", "drug"]), source="meta.tsv")


def test_a_drug_name_that_would_make_effect_names_ambiguous_is_refused():
    """contrast:5-MeO-DMT-LSD cannot be split back into its drugs (pymc failed after sampling with
    KeyError '5'): the scan table is refused first, naming the file and the drug."""
    with pytest.raises(InputError, match=r"meta.tsv: column 'drug' has name\(s\) \['5-MeO-DMT'\]"):
        validate_scans(scans(drug=["5-MeO-DMT", "5-MeO-DMT", "LSD"]), source="meta.tsv")
    with pytest.raises(InputError, match="drug:<drug>"):
        validate_scans(scans(drug=["a:b", "a:b", "LSD"]))
    assert validate_scans(scans(drug=["5MeO_DMT", "5MeO_DMT", "LSD"]))["drug"].iloc[0] == "5MeO_DMT"


def test_missing_column_and_duplicates_are_named():
    with pytest.raises(InputError, match=r"meta.tsv: missing required column\(s\) \['drug'\]"):
        validate_scans(scans().drop(columns="drug"), source="meta.tsv")
    with pytest.raises(InputError, match="duplicate scans"):
        validate_scans(scans(session=["1", "1", "1"]))


def test_exclude_keeps_first_reason():
    out = exclude(validate_scans(scans()), [True, False, False], "motion")
    out = exclude(out, [True, True, False], "no control")
    assert out["exclusion_reason"].tolist() == ["motion", "no control", ""]
    assert out["excluded"].tolist() == [True, True, False]


def test_atlas_rejects_duplicate_labels_and_unknown_system():
    regions = pd.DataFrame({"label": ["x", "x"], "network": ["A", "A"], "subnetwork": ["A", "A"], "system": ["unimodal"] * 2})
    with pytest.raises(InputError, match="duplicate region labels"):
        Atlas("t", regions)
    regions["label"] = ["x", "y"]
    regions["system"] = ["unimodal", "sensory"]
    with pytest.raises(InputError, match="unknown system"):
        Atlas("t", regions)
