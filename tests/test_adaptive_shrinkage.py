"""Adaptive shrinkage: lfsr that pays for looking at many pairs (Stephens 2017)."""

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from megafc.plugins.pooling.adaptive_shrinkage import MIN_EFFECTS, adaptive_shrinkage, sign_probabilities
from megafc.plugins.pooling.derived import false_sign_rates


def test_null_estimates_leave_no_sign_sure():
    """200 pure-noise estimates: the point mass takes the weight, and selecting by svalue <= 0.05
    picks nothing, where the same rule on 1 - pd (the per-effect view) picks several."""
    rng = np.random.default_rng(0)
    sd = rng.uniform(0.005, 0.02, 200)
    mean = rng.normal(0, sd)
    fit = adaptive_shrinkage(mean, sd)
    assert fit.null_weight > 0.9
    assert fit.lfsr.min() > 0.2
    table = pd.DataFrame({"effect": "overall", "mean": mean, "sd": sd,
                          "pd": stats.norm.cdf(np.abs(mean) / sd)})
    out = false_sign_rates(table)
    assert (out["svalue"] <= 0.05).sum() == 0
    # every row says how much weight its family put on exact zeros (the report warns near 1)
    assert (out["null_share"] == fit.null_weight).all()
    from megafc.plugins.reports.run_report import all_null_families, false_sign_block

    interval = {"hdi_low": mean - 2 * sd, "hdi_high": mean + 2 * sd, "effect_type": "overall"}
    block = false_sign_block(out.assign(**interval, null_share=0.995), "95% HDI")
    assert all_null_families(out.assign(null_share=0.995)) == ["overall"] and "No sign is sure by lfsr" in block
    assert "No sign is sure" not in false_sign_block(out.assign(**interval, null_share=0.6), "95% HDI")
    per_effect = (1 - table["pd"]).sort_values()
    assert ((per_effect.cumsum() / np.arange(1, 201)) <= 0.05).sum() > 0


def test_clear_effects_keep_their_sign_and_the_selected_list_keeps_its_rate():
    """300 pairs, a fifth with a real effect: estimates 4 sds from 0 keep a sure sign, and over
    20 simulated studies the wrong signs among svalue <= 0.05 are no more than the sum of
    their lfsr (what the list claims)."""
    wrong = claimed = selected_total = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        sd = rng.uniform(0.008, 0.015, 300)
        truth = np.where(rng.random(300) < 0.2, rng.normal(0, 0.04, 300), 0.0)
        mean = truth + rng.normal(0, sd)
        fit = adaptive_shrinkage(mean, sd)
        assert 0.5 < fit.null_weight < 0.95
        assert (fit.lfsr[np.abs(mean) >= 4 * sd] < 0.02).all()
        out = false_sign_rates(pd.DataFrame({"effect": "overall", "mean": mean, "sd": sd,
                                             "pd": stats.norm.cdf(np.abs(mean) / sd)}))
        selected = (out["svalue"] <= 0.05).to_numpy()
        wrong += int((selected & ((np.sign(mean) != np.sign(truth)) | (truth == 0))).sum())
        claimed += float(out.loc[selected, "lfsr"].sum())
        selected_total += int(selected.sum())
    assert selected_total >= 20 * 20  # of ~60 real effects a study
    assert wrong <= claimed + 2 * np.sqrt(claimed)  # Poisson noise on ~25 expected
    assert claimed <= 0.05 * selected_total


def test_lfsr_is_the_posterior_under_the_fitted_prior():
    """For one estimate, P(effect < 0), P(= 0), P(> 0) under the fitted mixture prior by
    numerical integration equal the closed form, and lfsr is the smaller side plus the mass at 0."""
    rng = np.random.default_rng(2)
    sd = np.full(80, 0.01)
    mean = np.concatenate([rng.normal(0, 0.01, 60), rng.normal(0.04, 0.01, 20)])
    fit = adaptive_shrinkage(mean, sd)
    assert fit.grid[-1] == pytest.approx(2 * np.sqrt(np.max(mean ** 2 - sd ** 2)))  # the grid's top: as ashr
    for x, s in ((0.018, 0.01), (-0.03, 0.012), (0.002, 0.02)):
        prior = lambda b: sum(w * stats.norm.pdf(b, 0, g) for w, g in zip(fit.weights[1:], fit.grid[1:]))
        lik = lambda b: stats.norm.pdf(x, b, s)
        neg = integrate.quad(lambda b: prior(b) * lik(b), -1, 0, points=[0], limit=200, epsabs=1e-12)[0]
        pos = integrate.quad(lambda b: prior(b) * lik(b), 0, 1, points=[0], limit=200, epsabs=1e-12)[0]
        zero = fit.weights[0] * stats.norm.pdf(x, 0, s)
        total = neg + pos + zero
        below, at_zero, above = sign_probabilities(np.array([x]), np.array([s]), fit.grid, fit.weights)
        assert (below[0], at_zero[0], above[0]) == pytest.approx((neg / total, zero / total, pos / total), rel=1e-6)
    below, at_zero, above = sign_probabilities(mean[:1], sd[:1], fit.grid, fit.weights)
    assert fit.lfsr[0] == pytest.approx(min(below[0], above[0]) + at_zero[0], rel=1e-12)


def test_few_effects_and_missing_values_fall_back_to_one_minus_pd():
    table = pd.DataFrame({"effect": ["overall"] * 3 + ["drug:x"] * 12,
                          "mean": [0.1, -0.02, 0.0] + [0.0] * 11 + [np.nan],
                          "sd": [0.01] * 14 + [np.nan], "pd": [0.99, 0.9, 0.5] + [0.6] * 11 + [np.nan]})
    out = false_sign_rates(table)
    assert out.loc[:2, "lfsr"].tolist() == pytest.approx([0.01, 0.1, 0.5])  # fewer than MIN_EFFECTS
    assert len(table) - 3 - 1 >= MIN_EFFECTS
    assert (out.loc[3:13, "lfsr"] > 0.4).all()
    assert np.isnan(out.loc[14, "lfsr"])  # no estimate in a fitted group: unknown, not 1 - pd
    assert out.loc[3:13, "svalue"].notna().all()


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="positive finite sds"):
        adaptive_shrinkage(np.array([0.1, 0.2]), np.array([0.01, 0.0]))


def test_dataset_effects_of_all_datasets_share_one_fit():
    """Dataset effects of network pairs are shrunk over every dataset's pairs at once (one prior
    for the family), while each effect keeps its own svalue list; drug effects stay fitted one
    drug at a time, and so do the summaries' dataset effects."""
    rng = np.random.default_rng(3)
    rows = []
    for effect, etype in (("dataset:a", "dataset"), ("dataset:b", "dataset"), ("dataset:c", "dataset"),
                          ("drug:x", "drug")):
        sd = rng.uniform(0.008, 0.012, 40)
        truth = np.where(np.arange(40) < (8 if effect == "dataset:a" else 0), 0.05, 0.0)
        mean = truth + rng.normal(0, sd)
        rows.append(pd.DataFrame({"effect": effect, "effect_type": etype, "mean": mean, "sd": sd,
                                  "pd": stats.norm.cdf(np.abs(mean) / sd)}))
    table = pd.concat(rows, ignore_index=True)
    out = false_sign_rates(table)
    family = table["effect_type"] == "dataset"
    joint = adaptive_shrinkage(table.loc[family, "mean"].to_numpy(), table.loc[family, "sd"].to_numpy()).lfsr
    assert out.loc[family, "lfsr"].to_numpy() == pytest.approx(joint)
    alone = adaptive_shrinkage(table.loc[:39, "mean"].to_numpy(), table.loc[:39, "sd"].to_numpy()).lfsr
    assert np.abs(out.loc[:39, "lfsr"].to_numpy() - alone).max() > 1e-3  # not dataset a's own fit
    drug = table["effect"] == "drug:x"
    own = adaptive_shrinkage(table.loc[drug, "mean"].to_numpy(), table.loc[drug, "sd"].to_numpy()).lfsr
    assert out.loc[drug, "lfsr"].to_numpy() == pytest.approx(own)
    apart = false_sign_rates(table, datasets_together=False)  # summaries: one fit per dataset
    np.testing.assert_allclose(apart.loc[:39, "lfsr"], alone)
    for effect, g in out.groupby("effect"):  # svalue: the running mean of lfsr within each effect
        order = g["lfsr"].sort_values(kind="stable")
        assert g.loc[order.index, "svalue"].to_numpy() == pytest.approx(order.cumsum() / np.arange(1, len(g) + 1))


def test_derived_sentences_and_shares_follow_what_was_made():
    """The methods name only the derived quantities a fit made (a subset of contrasts, none for one
    drug), and P(> 1) is undefined where no data moved the quantity (an undefined ratio, a drug's
    only dataset fixed at scale 1), not 0."""
    from megafc.plugins.pooling.derived import derived_text, share_above_1

    assert derived_text({}, []) == ""
    text = derived_text({"drug_similarity": pd.DataFrame()}, ["contrast:DMT-LSD"])
    assert "drug A's effect minus drug B's: 1 pair of drugs" in text and "a heuristic, not a posterior" in text
    assert "specificity" not in text
    assert np.isnan(share_above_1(np.full(10, np.nan))) and np.isnan(share_above_1(np.ones(10)))
    assert share_above_1(np.array([0.5, 1.5, 2.0, np.nan])) == pytest.approx(2 / 3)


def _shifted_study(seed: int, rho: float, n_datasets: int = 6, n_pairs: int = 100):
    """Dataset effects of ``n_pairs`` pairs in each of ``n_datasets`` datasets whose errors share
    one shift per dataset (correlation ``rho``), 30% of the pairs with a real effect."""
    rng = np.random.default_rng(seed)
    sd = rng.uniform(0.008, 0.012, n_datasets * n_pairs)
    truth = np.where(rng.random(len(sd)) < 0.3, rng.normal(0, 0.02, len(sd)), 0.0)
    shift = np.repeat(rng.normal(0, 1, n_datasets), n_pairs)
    mean = truth + sd * (np.sqrt(rho) * shift + np.sqrt(1 - rho) * rng.normal(0, 1, len(sd)))
    return mean, sd, truth, np.repeat([f"d{i}" for i in range(n_datasets)], n_pairs)


def test_errors_shared_by_a_datasets_pairs_are_integrated_out():
    """Pairs whose errors share a per-dataset shift (correlation 0.4): taken as independent, the
    shift passes for signal and the svalue-selected list holds more wrong signs than its lfsr
    claim (33 against 14 in 10 studies); with the correlation given, the claim holds and more is
    selected; a correlation of 0 is ash itself."""
    from megafc.plugins.pooling.error_correlation import ErrorCorrelation

    mean, sd, _, dataset = _shifted_study(0, 0.4)
    plain = adaptive_shrinkage(mean, sd)
    zero = adaptive_shrinkage(mean, sd, correlation=0.0, groups=dataset)
    np.testing.assert_array_equal(plain.lfsr, zero.lfsr)
    counts = {"independent": [0, 0.0, 0], "shared": [0, 0.0, 0]}
    for seed in range(10):
        mean, sd, truth, dataset = _shifted_study(seed, 0.4)
        table = pd.DataFrame({"effect": [f"dataset:{d}" for d in dataset], "effect_type": "dataset",
                              "mean": mean, "sd": sd, "pd": stats.norm.cdf(np.abs(mean) / sd)})
        for name, given in (("independent", None),
                            ("shared", ErrorCorrelation({d: 0.4 for d in set(dataset)}, 0.4))):
            out = false_sign_rates(table, correlation=given)
            selected = (out["svalue"] <= 0.05).to_numpy()
            counts[name][0] += int((selected & ((np.sign(mean) != np.sign(truth)) | (truth == 0))).sum())
            counts[name][1] += float(out.loc[selected, "lfsr"].sum())
            counts[name][2] += int(selected.sum())
        assert (out["error_correlation"] == 0.4).all()
    wrong, claimed, _ = counts["independent"]
    assert wrong > claimed + 3 * np.sqrt(claimed)
    wrong, claimed, selected = counts["shared"]
    assert wrong <= claimed + 2 * np.sqrt(claimed)
    assert selected > counts["independent"][2]
    with pytest.raises(ValueError, match=r"correlation must lie in \[0, 1\)"):
        adaptive_shrinkage(mean, sd, correlation=1.0)


def test_error_correlation_is_the_residual_correlation_of_the_scans():
    """A per-scan offset of every pair (sd 0.05 against 0.1 of each pair's own noise: correlation
    0.2) is measured after condition, subject and motion are taken out; large subject offsets
    and drug effects do not pass for it; a table without FC measures nothing."""
    from megafc.plugins.pooling.error_correlation import residual_correlation

    rng = np.random.default_rng(4)
    rows = []
    for dataset, n_subjects in (("a", 40), ("b", 30)):
        for s in range(n_subjects):
            subject_offset = rng.normal(0, 0.5)
            for session, condition in enumerate(("placebo", "drug")):
                offset = rng.normal(0, 0.05)
                fd = rng.uniform(0.05, 0.3)
                for p in range(30):
                    fc = (subject_offset + offset + rng.normal(0, 0.1) + 0.3 * (condition == "drug") * (p % 2)
                          + 0.4 * fd)
                    rows.append({"scan_id": f"{dataset}-{s}-{session}", "dataset": dataset, "subject": str(s),
                                 "condition": condition, "drug": "x", "mean_fd": fd, "network_a": f"n{p}",
                                 "network_b": f"n{p}", "fc": fc})
    table = pd.DataFrame(rows)
    measured = residual_correlation(table)
    assert measured.per_dataset == pytest.approx({"a": 0.2, "b": 0.2}, abs=0.06)
    assert measured.pooled == pytest.approx(0.2, abs=0.05)
    assert measured.of("elsewhere") == measured.pooled
    assert residual_correlation(table.drop(columns="fc")).pooled == 0.0
    anti = table.assign(fc=table["fc"] * np.where(table["network_a"].str[1:].astype(int) % 2, 1, -1))
    assert residual_correlation(anti).pooled < 0.05  # half the pairs move against the others: no common shift
