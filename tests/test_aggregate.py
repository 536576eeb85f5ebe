import numpy as np
import pandas as pd
import pytest

from megafc.core import Atlas, Connectomes, mark_unpaired, network_pair_table, paired_differences, validate_scans


def toy_atlas():
    regions = pd.DataFrame({
        "label": [f"r{i}" for i in range(5)],
        "network": ["Vis", "Vis", "Default", "Default", "Caudate"],
        "subnetwork": ["VisCent", "VisPeri", "DefaultA", "DefaultA", "Caudate"],
        "system": ["unimodal", "unimodal", "transmodal", "transmodal", "subcortical"],
    })
    return Atlas("toy", regions)


def toy_scans():
    return validate_scans(pd.DataFrame({
        "dataset": ["d"] * 4, "subject": ["1", "1", "2", "2"], "session": ["a", "b", "a", "b"],
        "drug": ["LSD"] * 4, "condition": ["drug", "placebo", "drug", "placebo"],
    }))


def test_network_pairs_match_brute_force():
    atlas, scans = toy_atlas(), toy_scans()
    rng = np.random.default_rng(1)
    mats = rng.normal(size=(4, 5, 5))
    mats = (mats + mats.transpose(0, 2, 1)) / 2
    conn = Connectomes(list(scans["scan_id"]), mats, atlas.labels, "test")
    table = network_pair_table(conn, atlas, scans, level="network")
    assert (table["network_a"] <= table["network_b"]).all()
    # 3 networks -> Vis-Vis, Default-Default, 3 between pairs (Caudate has 1 region: no within pair)
    assert table.groupby(["network_a", "network_b"]).ngroups == 5
    net = atlas.regions["network"].to_numpy()
    for s in range(4):
        m = mats[s]
        for a, b in [("Vis", "Vis"), ("Default", "Vis"), ("Caudate", "Default")]:
            ia, ib = np.flatnonzero(net == a), np.flatnonzero(net == b)
            block = m[np.ix_(ia, ib)]
            expected = block[np.triu_indices(len(ia), 1)].mean() if a == b else block.mean()
            lo, hi = sorted([a, b])
            row = table[(table.scan_id == scans.scan_id[s]) & (table.network_a == lo) & (table.network_b == hi)]
            assert row["fc"].item() == pytest.approx(expected)
    sub = network_pair_table(conn, atlas, scans, level="subnetwork")
    assert ("VisCent", "VisPeri") in set(zip(sub.network_a, sub.network_b))
    # each subnetwork's network, for subnetwork specificity; network-level tables carry none
    assert sub.attrs["parents"] == {"VisCent": "Vis", "VisPeri": "Vis", "DefaultA": "Default", "Caudate": "Caudate"}
    assert "parents" not in table.attrs


def test_unpaired_scans_are_excluded_with_reason():
    scans = toy_scans()
    scans.loc[1, "excluded"] = True  # subject 1 loses its placebo scan
    scans.loc[1, "exclusion_reason"] = "motion"
    out = mark_unpaired(scans)
    assert out["excluded"].tolist() == [True, True, False, False]
    assert "no usable control" in out.loc[0, "exclusion_reason"]
    assert out.loc[1, "exclusion_reason"] == "motion"


def test_paired_differences_subtract_the_subjects_control():
    atlas, scans = toy_atlas(), toy_scans()
    mats = np.zeros((4, 5, 5))
    mats[0] += 0.5  # subject 1 drug
    mats[1] += 0.2  # subject 1 placebo
    conn = Connectomes(list(scans["scan_id"]), mats, atlas.labels, "test")
    diffs = paired_differences(network_pair_table(conn, atlas, scans))
    assert set(diffs["scan_id"]) == {scans.scan_id[0], scans.scan_id[2]}
    assert np.allclose(diffs[diffs.subject == "1"]["fc_diff"], 0.3)
    assert np.allclose(diffs[diffs.subject == "2"]["fc_diff"], 0.0)
    assert "order_diff" not in diffs
    # with each scan's place among its subject's sessions: subject 1 had the drug second, 2 first
    ordered = scans.assign(session_order=[2, 1, 1, 2])
    diffs = paired_differences(network_pair_table(conn, atlas, ordered)).drop_duplicates("scan_id")
    assert dict(zip(diffs["subject"], diffs["order_diff"])) == {"1": 1.0, "2": -1.0}
    unknown = scans.assign(session_order=[2, np.nan, 1, 2])  # subject 1's control has no order
    diffs = paired_differences(network_pair_table(conn, atlas, unknown)).drop_duplicates("scan_id")
    got = dict(zip(diffs["subject"], diffs["order_diff"]))
    assert np.isnan(got["1"]) and got["2"] == -1.0


def test_select_pairs_keeps_named_pairs_and_summaries():
    from megafc.core import ConfigError
    from megafc.core.aggregate import select_pairs

    pairs = pd.DataFrame({"network_a": ["Default", "Default", "Vis", "transmodal-unimodal"],
                          "network_b": ["Default", "Vis", "Vis", ""], "fc": [0.1, 0.2, 0.3, 0.15]})
    pairs.attrs["summaries"] = "members"
    out = select_pairs(pairs, [["Vis", "Default"]])  # either order
    assert list(zip(out.network_a, out.network_b)) == [("Default", "Vis"), ("transmodal-unimodal", "")]
    assert out.attrs["summaries"] == "members"
    assert select_pairs(pairs, None) is pairs
    with pytest.raises(ConfigError, match=r"aggregate.pairs.*\['Caudate', 'Vis'\].*'Default', 'Vis'"):
        select_pairs(pairs, [["Vis", "Caudate"]])
    with pytest.raises(ConfigError, match="aggregate.pairs"):
        select_pairs(pairs, [["Vis"]])
