import numpy as np
import pytest

from megafc.core import ConfigError, mark_unpaired, validate_scans
from megafc.plugins.atlases.synthetic import SyntheticAtlas
from megafc.plugins.datasets.synthetic import SiteSpec, SyntheticDataset


@pytest.fixture(scope="module")
def atlas():
    return SyntheticAtlas(SyntheticAtlas.Config(n_cortical=34, n_cerebellar=2)).load()


def test_default_design_matches_the_paper(atlas):
    inputs = SyntheticDataset(SyntheticDataset.Config(n_volumes=20)).load(atlas, seed=0)
    scans = mark_unpaired(validate_scans(inputs.scans))
    assert scans["dataset"].nunique() == 11
    assert set(scans["drug"]) == {"psilocybin", "LSD", "mescaline", "DMT", "ayahuasca"}
    n_subjects = scans.groupby("dataset")["subject"].nunique().sum()
    assert n_subjects == 267
    assert 500 <= (~scans["excluded"]).sum() <= 535
    aya = scans[scans["dataset"] == "ayahuasca_1"]
    assert set(aya["condition"]) == {"baseline", "drug"} and "placebo" not in set(aya["condition"])
    assert (aya[aya.condition == "baseline"]["session"] == "1").all()
    others = scans[scans["dataset"] != "ayahuasca_1"]
    assert set(others["condition"]) == {"drug", "placebo"}
    # scans missing their partner are excluded with a reason, never dropped
    assert scans.loc[scans.excluded, "exclusion_reason"].str.contains("no usable").all()


def test_deterministic_and_seeded(atlas):
    cfg = SyntheticDataset.Config(scale=0.1, n_volumes=30)
    a = SyntheticDataset(cfg).load(atlas, seed=1)
    b = SyntheticDataset(cfg).load(atlas, seed=1)
    c = SyntheticDataset(cfg).load(atlas, seed=2)
    sid = a.scans["scan_id"][0]
    assert np.array_equal(a.timeseries[sid], b.timeseries[sid])
    assert a.fingerprints == b.fingerprints != c.fingerprints
    assert not np.array_equal(a.timeseries[sid], c.timeseries.get(sid, np.zeros(1)))


def test_truth_has_planted_signs(atlas):
    truth = SyntheticDataset(SyntheticDataset.Config(scale=0.1, n_volumes=30)).load(atlas, 0).truth
    t = truth[(truth.aggregation == "network") & (truth.effect == "overall")].set_index(["network_a", "network_b"])["truth"]
    for trans in ("Default", "Cont", "Limbic"):
        for uni in ("Vis", "SomMot"):
            assert t[tuple(sorted((trans, uni)))] > 0.02
    assert t[("SomMot", "SomMot")] < 0 and t[("Vis", "Vis")] < 0
    assert t[("SomMot", "Thalamus")] > 0 and t[("Caudate", "SomMot")] < 0
    assert abs(t[("DorsAttn", "SalVentAttn")]) < 1e-9
    drugs = truth[(truth.aggregation == "network") & (truth.effect_type == "drug")]
    assert set(drugs["level"]) == {"psilocybin", "LSD", "mescaline", "DMT", "ayahuasca"}
    # psilocybin's map is closer to LSD's than to DMT's
    wide = drugs.pivot_table(index=["network_a", "network_b"], columns="level", values="truth")
    assert np.corrcoef(wide["psilocybin"], wide["LSD"])[0, 1] > np.corrcoef(wide["psilocybin"], wide["DMT"])[0, 1]


def test_empirical_fc_reflects_the_truth(atlas):
    """Drug-minus-placebo FC from simulated timeseries moves in the planted direction."""
    from megafc.core import network_pair_table
    from megafc.core.pipeline import estimate_connectomes
    from megafc.plugins.estimators.correlation import FisherZCorrelation

    inputs = SyntheticDataset(SyntheticDataset.Config(scale=0.5, n_volumes=150)).load(atlas, 0)
    scans = mark_unpaired(validate_scans(inputs.scans))
    inc = list(scans.loc[~scans.excluded, "scan_id"])
    pairs = network_pair_table(estimate_connectomes(FisherZCorrelation(), inputs.timeseries, inc, atlas), atlas, scans)
    m = pairs.groupby(["network_a", "network_b", "condition"])["fc"].mean().unstack()
    diff = m["drug"] - m[["placebo", "baseline"]].mean(axis=1)
    assert diff[("Default", "Vis")] > 0.02 and diff[("Caudate", "SomMot")] < -0.02


def test_bad_site_design_is_a_config_error():
    with pytest.raises(ConfigError, match=r"dataset.sites\[0\].design"):
        SyntheticDataset(SyntheticDataset.Config(sites=[SiteSpec("x", "LSD", 10, design="latin_square")]))
