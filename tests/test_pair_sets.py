"""Summaries: which network pairs they hold, user definitions, and their per-scan outcomes."""

import numpy as np
import pandas as pd
import pytest

from megafc.core import ConfigError, with_summaries
from megafc.core.pair_sets import membership
from megafc.plugins.atlases.synthetic import SyntheticAtlas

ATLAS = SyntheticAtlas(SyntheticAtlas.Config(n_cortical=34, n_cerebellar=2)).load()


def members_of(m: pd.DataFrame, name: str) -> set:
    return set(map(tuple, m.loc[m.summary == name, ["network_a", "network_b"]].to_numpy()))


def test_builtin_summaries_follow_the_paper():
    m = membership(ATLAS, "network", {})
    cortical = ["Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"]
    assert members_of(m, "within_network") == {(n, n) for n in cortical}  # cortical only
    assert len(members_of(m, "between_network")) == 7 * 6 // 2
    assert members_of(m, "transmodal-unimodal") == {
        (min(a, b), max(a, b)) for a in ("Limbic", "Cont", "Default") for b in ("Vis", "SomMot")}
    assert members_of(m, "within_visual") == {("Vis", "Vis")}
    assert members_of(m, "Caudate-unimodal") == {("Caudate", "SomMot"), ("Caudate", "Vis")}
    assert members_of(m, "Thalamus-transmodal") == {("Cont", "Thalamus"), ("Default", "Thalamus"),
                                                    ("Limbic", "Thalamus")}
    assert {"Cerebellum-unimodal", "Putamen-transmodal"} <= set(m.summary)
    assert (m.network_a <= m.network_b).all()


def test_subnetwork_level_members_follow_their_networks():
    m = membership(ATLAS, "subnetwork", {})
    vis = members_of(m, "within_visual")
    assert ("VisCent", "VisPeri") in vis and all(a.startswith("Vis") and b.startswith("Vis") for a, b in vis)
    within = members_of(m, "within_network")
    assert ("DefaultA", "DefaultB") in within and ("ContA", "DefaultA") not in within


def test_user_definitions_and_their_errors():
    m = membership(ATLAS, "network", {"dmn_vis": {"pairs": [["Vis", "Default"]]},
                                       "attention": {"systems": ["attention"]},
                                       "striatum_sensory": {"networks": ["Caudate", "Putamen"], "systems": ["unimodal"]}},
                   builtin=False)
    assert set(m.summary) == {"dmn_vis", "attention", "striatum_sensory"}
    assert members_of(m, "dmn_vis") == {("Default", "Vis")}
    assert members_of(m, "attention") == {("DorsAttn", "DorsAttn"), ("DorsAttn", "SalVentAttn"),
                                          ("SalVentAttn", "SalVentAttn")}
    assert len(members_of(m, "striatum_sensory")) == 4
    for bad, match in (({"x": {"pairs": [["Vis", "Nowhere"]]}}, "summaries.x.*unknown network.*Nowhere"),
                       ({"x": {"systems": ["sensory"]}}, "summaries.x.*unknown system.*sensory"),
                       ({"x": {"colour": "red"}}, "summaries.x.*unknown field"),
                       ({"x": {"within": True}}, "summaries.x.*needs"),
                       ({"x": {"pairs": [["Vis", "Vis"]], "within": False}}, "summaries.x.*matches no network pair"),
                       # the third system was dropped silently (pairs of the first two only)
                       ({"x": {"systems": ["unimodal", "transmodal", "attention"]}}, "summaries.x' lists 3 systems"),
                       # a built-in's name replaced it silently; methods.md still described the built-in
                       ({"within_network": {"pairs": [["Default", "Vis"]]}}, r"\['within_network'\], the name"),
                       # not a mapping, or a string for a list: an internal error, or read letter by letter
                       ({"x": 5}, r"summaries.x' is 5; expected a mapping"),
                       ({"x": ["Default", "Vis"]}, r"summaries.x' is \['Default', 'Vis'\]; expected a mapping"),
                       ({"x": {"pairs": "Default"}}, r"summaries.x.pairs' is 'Default'; expected a list"),
                       ({"x": {"systems": "unimodal"}}, r"summaries.x.systems' is 'unimodal'; expected a list"),
                       ({"x": {"pairs": ["Default", "Vis"]}}, r"summaries.x.pairs' .*two-network lists")):
        with pytest.raises(ConfigError, match=match):
            membership(ATLAS, "network", bad)


def test_summary_outcome_is_the_per_scan_mean_of_its_pairs():
    rng = np.random.default_rng(0)
    rows = [dict(scan_id=s, dataset="d", subject=s, session="1", drug="LSD", condition="drug", dose=np.nan,
                 mean_fd=0.1, network_a=a, network_b=b, system_a="x", system_b="y", n_edges=4, fc=rng.normal())
            for s in ("s1", "s2") for a, b in (("Default", "Vis"), ("Cont", "Vis"), ("Caudate", "SomMot"))]
    pairs = pd.DataFrame(rows)
    pairs.attrs["level"] = "network"
    out = with_summaries(pairs, ATLAS, {"tu": {"pairs": [["Default", "Vis"], ["Cont", "Vis"]]}}, builtin=False)
    tu = out[(out.network_a == "tu") & (out.network_b == "")].set_index("scan_id")
    want = pairs[pairs.network_a.isin(["Default", "Cont"])].groupby("scan_id").fc.mean()
    np.testing.assert_allclose(tu.loc[want.index, "fc"], want)
    assert (tu.n_edges == 8).all() and (tu.dataset == "d").all()
    assert list(out.attrs["summaries"].summary.unique()) == ["tu"] and out.attrs["level"] == "network"
