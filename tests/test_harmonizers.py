"""Site harmonisation: ComBat removes site offsets, keeps drug and motion effects, refuses
designs it cannot separate, and agrees with the hierarchical model's own site terms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, megafc_cli
from megafc.core import Connectomes, InputError
from megafc.core.pipeline import harmonize
from megafc.plugins.harmonizers.combat import ComBatHarmonizer
from megafc.plugins.harmonizers.none import NoHarmonization

SITES = {"a": 0.0, "b": 0.4, "c": -0.3}
DRUG_EFFECT = 0.2


def site_data(seed: int = 0, n_per_site: int = 24, n_regions: int = 6):
    """Connectomes with an additive offset per site, a drug effect on edge (0, 1) and FD."""
    rng = np.random.default_rng(seed)
    rows, mats = [], []
    for site, offset in SITES.items():
        for i in range(n_per_site):
            # site c is mostly drug scans, site a mostly control: harmonising without the
            # condition as a covariate would take part of the drug effect for site effects
            drug = i % 4 != 0 if site == "c" else i % 4 == 1 if site == "a" else i % 2 == 1
            fd = rng.uniform(0.05, 0.3)
            m = rng.normal(offset, 0.05, (n_regions, n_regions))
            m[0, 1] += DRUG_EFFECT * drug
            m = np.triu(m, 1)
            mats.append(m + m.T)
            rows.append({"scan_id": f"{site}-{i}", "dataset": site, "subject": f"{i // 2}", "drug": "LSD",
                         "condition": "drug" if drug else "placebo", "mean_fd": fd})
    scans = pd.DataFrame(rows)
    labels = [f"r{k}" for k in range(n_regions)]
    return Connectomes(scan_ids=list(scans["scan_id"]), matrices=np.stack(mats), labels=labels,
                       estimator="correlation"), scans


def edge(conn: Connectomes, scans: pd.DataFrame, a: int, b: int) -> pd.Series:
    return pd.Series(conn.matrices[:, a, b], index=scans["scan_id"].to_numpy())


def test_combat_removes_site_offsets_and_keeps_the_drug_effect():
    conn, scans = site_data()
    out = harmonize(ComBatHarmonizer(), conn, scans)
    assert out.matrices.shape == conn.matrices.shape
    assert np.allclose(out.matrices, out.matrices.transpose(0, 2, 1))
    control = scans["condition"].eq("placebo").to_numpy()
    site = scans["dataset"].to_numpy()[control]
    for a, b in [(0, 1), (2, 4), (3, 5)]:  # site means of the control scans (drug shares differ by site)
        before = edge(conn, scans, a, b)[control].groupby(site).mean()
        after = edge(out, scans, a, b)[control].groupby(site).mean()
        assert before.max() - before.min() > 0.5  # the planted offsets
        assert after.max() - after.min() < 0.05
    drug = scans["condition"].eq("drug").to_numpy()
    effect_after = out.matrices[drug, 0, 1].mean() - out.matrices[~drug, 0, 1].mean()
    assert effect_after == pytest.approx(DRUG_EFFECT, abs=0.04)
    null_after = out.matrices[drug, 2, 4].mean() - out.matrices[~drug, 2, 4].mean()
    assert abs(null_after) < 0.04
    # without the condition as a covariate, ComBat takes part of the unbalanced site's drug
    # effect for a site effect: the preserved covariate is what keeps it
    blind = harmonize(ComBatHarmonizer(ComBatHarmonizer.Config(preserve_condition=False)), conn, scans)
    effect_blind = blind.matrices[drug, 0, 1].mean() - blind.matrices[~drug, 0, 1].mean()
    assert effect_blind < effect_after - 0.02


def test_none_is_the_identity():
    conn, scans = site_data()
    assert harmonize(NoHarmonization(), conn, scans) is conn


def test_combat_refuses_a_site_with_only_drug_scans():
    conn, scans = site_data()
    scans.loc[scans["dataset"] == "c", "condition"] = "drug"
    with pytest.raises(InputError, match=r"\['c'\] have only drug or only control scans"):
        harmonize(ComBatHarmonizer(), conn, scans)
    # ... which is fine once the condition is not a preserved covariate
    cfg = ComBatHarmonizer.Config(preserve_condition=False)
    harmonize(ComBatHarmonizer(cfg), conn, scans)


def test_combat_needs_fd_on_every_scan_and_two_scans_per_site():
    conn, scans = site_data()
    scans.loc[3, "mean_fd"] = np.nan
    with pytest.raises(InputError, match=r"scans \['a-3'\] have no mean_fd.*harmonizer.preserve_fd=false"):
        harmonize(ComBatHarmonizer(), conn, scans)
    conn, scans = site_data()
    keep = (scans["dataset"] != "c") | (scans["scan_id"] == "c-0")
    small = Connectomes(scan_ids=list(scans.loc[keep, "scan_id"]), matrices=conn.matrices[keep.to_numpy()],
                        labels=conn.labels, estimator="correlation")
    with pytest.raises(InputError, match=r"\['c'\] have a single included scan"):
        harmonize(ComBatHarmonizer(), small, scans[keep])


def test_combat_and_the_hierarchical_model_agree_under_strong_site_offsets(tmp_path):
    """A real two-job sweep (harmonizer=none,combat) on data with strong additive site offsets:
    every credible overall effect has the same sign under both, and megafc-compare shows both."""
    out = tmp_path / "sweep dir"
    # a handful of pairs (planted effects and nulls), so that short chains converge
    pairs = "[[Default,Vis],[Cont,SomMot],[SomMot,Vis],[Caudate,SomMot],[Thalamus,Vis],[Default,Limbic]]"
    overrides = [o for o in TINY if not o.startswith(("pooling.draws", "pooling.tune", "pooling.max_treedepth",
                                                       "pooling.sampler", "dataset.scale"))] + [
        "pooling.draws=150", "pooling.tune=150", "dataset.scale=0.25", "dataset.site_offset_sd=0.3",
        f"aggregate.pairs={pairs}", "summaries_builtin=false",
        # nutpie: both jobs in 32 s instead of 42 s; an order slope is beside the point here
        "pooling.session_order=false", "pooling.sampler=nutpie"]
    proc = megafc_cli(["--multirun", "harmonizer=none,combat", *overrides, f"hydra.sweep.dir={out}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {p.name.split("harmonizer=")[1].split(",")[0]: p for p in out.iterdir() if "harmonizer=" in p.name}
    assert set(jobs) == {"none", "combat"}
    assert "ComBat" in (jobs["combat"] / "methods.md").read_text()
    # nutpie's posterior also holds the unconstrained twins of bounded variables (tau_dataset_local_log__):
    # the same draws, which diagnostics.tsv and the R-hat warning would count twice
    diagnosed = set(pd.read_csv(jobs["none"] / "diagnostics.tsv", sep="\t")["variable"])
    assert "tau_dataset_local" in diagnosed and not [v for v in diagnosed if v.endswith("__")]
    key = ["network_a", "network_b", "effect"]
    eff = {h: pd.read_csv(p / "effects.tsv", sep="\t").query("effect == 'overall'").set_index(key)
           for h, p in jobs.items()}
    both = eff["none"].merge(eff["combat"], left_index=True, right_index=True, suffixes=("_none", "_combat"))
    credible = pd.Series(False, index=both.index)
    for h in ("none", "combat"):
        credible |= (both[f"hdi_low_{h}"] > 0) | (both[f"hdi_high_{h}"] < 0)
    assert credible.sum() >= 3  # the planted effects are found
    assert (both[["r_hat_none", "r_hat_combat"]] < 1.05).all().all()  # converged enough to compare
    signs = np.sign(both.loc[credible, ["mean_none", "mean_combat"]])
    assert (signs["mean_none"] == signs["mean_combat"]).all()
    proc = megafc_cli([str(out)], cwd=tmp_path, script="megafc-compare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs_table = pd.read_csv(out / "comparison" / "jobs.tsv", sep="\t")
    assert {"harmonizer=none", "harmonizer=combat"} <= {
        part for label in jobs_table["pipeline"] for part in str(label).split()}
