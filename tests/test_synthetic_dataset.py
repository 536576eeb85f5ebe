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
    # a dose is the drug's: control scans have none (they carried the site's active dose)
    drug = scans["condition"] == "drug"
    assert scans.loc[~drug, "dose"].isna().all() and scans.loc[drug & (scans.dataset == "lsd_2"), "dose"].eq(0.1).all()


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
    # no planted effect: only the projection of noisy scans to valid correlations moves it
    assert abs(t[("DorsAttn", "SalVentAttn")]) < 5e-4
    drugs = truth[(truth.aggregation == "network") & (truth.effect_type == "drug")]
    assert set(drugs["level"]) == {"psilocybin", "LSD", "mescaline", "DMT", "ayahuasca"}
    # psilocybin's map is closer to LSD's than to DMT's
    wide = drugs.pivot_table(index=["network_a", "network_b"], columns="level", values="truth")
    assert np.corrcoef(wide["psilocybin"], wide["LSD"])[0, 1] > np.corrcoef(wide["psilocybin"], wide["DMT"])[0, 1]


class NoiselessScans(SyntheticDataset):
    """Records each scan's expected (population) Fisher-z FC in place of simulating its time series."""

    def _simulate(self, latent, loadings, member, fd, rng, n_volumes):
        lam = loadings[member]
        r = np.outer(lam, lam) * latent[np.ix_(member, member)]
        np.fill_diagonal(r, 0.0)
        self.recorded.append(np.arctanh(r))
        return np.zeros((2, len(member))), np.zeros(2)


@pytest.mark.parametrize("dataset_deviation_sd", [0.0, 0.3])
def test_truth_is_the_mean_fc_change_over_subjects(atlas, dataset_deviation_sd):
    """The planted effects are what the models estimate: each dataset's mean over subjects and
    sessions of its scans' expected FC change. Scans without time-series noise, 10x the default
    study's subjects, average to the truth (slope 1 within 1.5%; 0.994 here). The change at the
    average subject, the truth before, lay ~3% above (FC is a nonlinear function of the latent
    deviations, and most noisy scans are projected to a valid correlation matrix). With
    dataset-specific deviations the truth carries each dataset's own."""
    from megafc.core import Connectomes, network_pair_table
    from megafc.plugins.datasets.synthetic import EffectSpec

    ds = NoiselessScans(SyntheticDataset.Config(scale=10, effects=EffectSpec(dataset_deviation_sd=dataset_deviation_sd)))
    ds.recorded = []
    inputs = ds.load(atlas, 0)
    conn = Connectomes(scan_ids=list(inputs.scans.scan_id), matrices=np.stack(ds.recorded), labels=atlas.labels,
                       estimator="population")
    fc = network_pair_table(conn, atlas, inputs.scans)
    mean = fc.groupby(["dataset", "network_a", "network_b", fc.condition == "drug"])["fc"].mean().unstack()
    change = (mean[True] - mean[False]).rename("change").reset_index()
    truth = inputs.truth[(inputs.truth.aggregation == "network") & (inputs.truth.effect_type == "dataset")]
    m = truth.merge(change, left_on=["level", "network_a", "network_b"], right_on=["dataset", "network_a", "network_b"])
    assert len(m) == len(truth) > 100
    slope = np.sum(m.change * m.truth) / np.sum(m.truth ** 2)
    assert abs(slope - 1) < 0.015, slope
    # each dataset's own deviation is in its truth: the datasets of a drug differ by far more
    # than the truth misses their scans' change by
    between = m.groupby(["network_a", "network_b", m.level.str.rstrip("_0123456789")])["truth"].std().mean()
    missed = np.sqrt(np.mean((m.change - m.truth) ** 2))
    if dataset_deviation_sd:
        assert between > 3 * missed, (between, missed)


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
