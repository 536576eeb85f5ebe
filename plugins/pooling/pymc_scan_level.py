"""The ``pymc`` pooling model: the full scan-level hierarchical model over every network pair.

Each network pair's mean FC of every scan is modelled with subject intercepts, a drug effect
per dataset (partially pooled within drug; each drug its own effect and the overall effect
their mean, or with ``drug_effects=random`` drugs pooled around an overall effect), scan-level
covariates (FD by default, optionally dose and time since dose) and each dataset's own residual
and subject sds (partially pooled across datasets). Means are integrated out exactly
(:mod:`.scan_model`); NUTS samples the sds and covariate slopes only.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd
import xarray as xr

from megafc.core import Choice, ConfigError, PoolingModel, PoolingResult

from .adaptive_shrinkage import REFERENCE as ASH_REFERENCE
from .derived import absent_drugs, contrast_pairs, summary_columns
from .design import (
    PYMC_PACKAGES,
    bayesian_references,
    HierarchicalPriors, Heterogeneity, Likelihood, Parametrization, SamplerConfig, ess_threshold, outcomes_text, resolve_sampler, sample, validate_sampler_config,
)
from .loo import log_likelihood_group, sample_dataset_effects, scan_model_loglik, thinned, tidy_posterior
from .predictive import paired_contrasts, ppc_figure, replicate_contrasts
from .scan_design import ScanDesign, covariate_matrix, motion_on, scan_design, session_order_on
from .scan_results import summarise_scan_fit
from .scan_kernel import conditional_draws, kernel_arrays, scan_marginal_loglik
from .scan_model import ScanStatistics, scan_statistics
from .subject_response import MIN_PAIRS, MIN_SUBJECTS, population_factors, response_spread


class PairPrior(Choice):
    """pooling.pair_prior: the prior of each network pair's overall effect."""

    independent = "independent"
    horseshoe = "horseshoe"
    by_class = "by_class"


class DrugEffects(Choice):
    """pooling.drug_effects: each drug its own effect (fixed), or draws around the overall (random)."""

    fixed = "fixed"
    random = "random"


class FitInputs(NamedTuple):
    design: ScanDesign
    x: np.ndarray  # covariate columns, one row per scan
    names: list[str]
    scales: dict[str, float]
    notes: list[str]
    statistics: ScanStatistics
    is_summary: np.ndarray  # per outcome column: a summary, not a network pair


@dataclass
class ScanPriors(HierarchicalPriors):
    #: Prior guesses of a pair's residual sd of scan-level FC and between-subject sd (Fisher
    #: z). They set the prior medians of the total sd sqrt(sigma^2 + subject^2) (log-normal,
    #: sd 1 on the log scale) and of the subject share of variance (logit-normal, sd 1).
    sigma_sd: float = 0.1
    subject_sd: float = 0.1
    #: scale of the HalfNormal prior on the spread of a pair's per-dataset values (log total
    #: sd, logit subject share) around their dataset's common shift.
    sd_spread: float = 0.5
    #: sigma of the zero-sum normal prior on the drugs' log scales (pooling.drug_scale); with D
    #: drugs each log scale has prior sd sigma sqrt(1 - 1/D) (0.45 for 5 drugs), so a drug 2x
    #: the drugs' geometric mean is ~1.5 prior sds out.
    drug_scale_sd: float = 0.5
    #: scale of the HalfNormal prior on the spread of the dataset units' log scales
    #: (pooling.dataset_scale): 0.25 puts a dataset 1.3x or 0.8x its drug's strength well
    #: within the prior (the synthetic study's datasets vary with sd 0.15).
    dataset_scale_sd: float = 0.25


class PyMCPooling(PoolingModel):
    """Scan-level hierarchical model over all network pairs (every design, FD-adjusted, per-dataset noise)."""

    name = "pymc"
    packages = PYMC_PACKAGES

    @property
    def references(self) -> list[str]:
        return [*bayesian_references(self.config, auto="nutpie"), ASH_REFERENCE]
    fits_summaries = True

    @dataclass
    class Config(SamplerConfig):
        #: 2 x 2000 draws: R-hat <= ~1.01 and bulk ESS >= ~200 on every sampled quantity of the
        #: 325-pair benchmark.
        draws: int = 2000
        #: nutpie's adaptation has settled by 500 steps (1000 gave the same R-hat and ESS on the
        #: 325-pair benchmark for 17% more sampling time).
        tune: int = 500
        #: Only sds and slopes are sampled (the effects' funnels are integrated out), so a
        #: larger step is safe: at 0.8 the 325-pair benchmark takes the same 31 leapfrog steps a
        #: draw as at 0.9 but they reach further (bulk ESS of the slowest sd 156 -> 421, R-hat
        #: 1.015 -> 1.008, no divergences); 0.95 doubles the steps for no gain.
        target_accept: float = 0.8
        #: Chains run in parallel (2 cores on the reference machine).
        cores: int = 2
        #: Between-drug and between-dataset sds (tau) per network pair. learned: tau[p] = s x
        #: lambda[p], s ~ HalfNormal(priors.*_sd) learned from all pairs, lambda[p] ~ HalfCauchy(1)
        #: (most pairs near the common scale, a few free to escape it); per_pair: each its own
        #: HalfNormal(priors.*_sd) prior (as bambi fits it); pooled: as learned with lambda ~
        #: HalfNormal(1); shared: one for all pairs. null: learned for the between-dataset sds,
        #: per_pair for the between-drug ones (random drug effects; pooled shrank their large
        #: pairs' drug effects, 95% coverage 0.29-0.92). Two or three datasets a drug cannot pin
        #: a pair's tau_dataset down: under per_pair its posterior sat near 0.011 where the
        #: planted one was ~0.001, every drug interval was too wide (95% coverage 0.99) and
        #: drug_similarity, which needs the posterior variance to be the estimates' real error,
        #: missed the planted distances. Over 20 replicates of every calibration scenario
        #: learned covered overall, drug, contrast and dataset effects at 0.91-0.96 with 25-33%
        #: narrower intervals, but pulls a pair whose datasets disagree a little (planted sd
        #: 0.002-0.02) to the common scale: those sds' intervals cover 0.21-0.61.
        heterogeneity: Optional[Heterogeneity] = None
        #: Prior of each pair's overall effect: independent (Normal(0, effect_sd), the default),
        #: horseshoe (regularised, centred at 0, learned scales) or by_class (pairs of a
        #: system-pair class share a learned mean and spread). On the synthetic study by_class
        #: pulled null pairs to their class mean (null coverage 74%) and horseshoe shrank true
        #: overall effects to 0 when the between-drug sds were uncertain (docs/calibration.md).
        pair_prior: PairPrior = PairPrior.independent
        #: How the drugs' effects relate. fixed: each drug its own effect (prior Normal(0,
        #: effect_sd)), and the overall effect is the mean of the analysed drugs' effects. random:
        #: the drugs are exchangeable draws around the overall effect with a learned between-drug
        #: sd per pair (tau_drug), the overall effect their population's centre. null: fixed,
        #: unless drug_scale or a pair_prior other than independent model the overall effect as
        #: that centre (then random). Five drugs barely identify tau_drug, and random shrank the
        #: extreme drugs towards the middle: over 20 replicates of every calibration scenario,
        #: 95% coverage of the large drug contrasts was 0.80-0.89 (docs/calibration.md).
        drug_effects: Optional[DrugEffects] = None
        #: Adjust for each scan's mean FD (effects at equal motion): null = whenever every
        #: included scan has mean_fd; true = required; false = never.
        motion: Optional[bool] = None
        #: Each drug's effects centred on its own scale x the overall effect (beta[d, p] =
        #: scale[d] mu[p] + deviation), the scales' geometric mean fixed at 1: drugs that share a
        #: pattern at different strengths are not made to disagree pair by pair, and
        #: drug_similarity.tsv gets each pair's scale_ratio.
        drug_scale: bool = False
        #: Each dataset's effects centred on its own scale x its drug's effect (theta[u, p] =
        #: scale[u] beta[d, p] + deviation; the log scales of a drug's datasets ~ Normal(0, s)
        #: summing to zero, s learned; a drug's only dataset scale 1): datasets that show their
        #: drug's pattern at different strengths (dose, scanner, timing) are not made to disagree
        #: pair by pair, and drug effects (and, with drug_scale, scales) are reported for the
        #: drug's population of datasets, so a drug seen in one or two datasets carries the
        #: spread between datasets in its intervals (a dataset's and its drug's strength cannot
        #: be told apart from that dataset alone); dataset_scales.tsv. null: on whenever a drug
        #: has two or more datasets (the spread is learned there); true: the same, said when no
        #: drug has; false: off. Without them the drug-similarity magnitudes were too sure: over
        #: 20 replicates of every calibration scenario 95% coverage of rms_ratio was 0.62-0.76,
        #: with them 0.93-0.98 (docs/calibration.md).
        dataset_scale: Optional[bool] = None
        #: Drug-specific dose slopes (partially pooled across drugs); needs dose_reference.
        dose: bool = False
        #: Reference dose per drug (the drug's own unit, e.g. {psilocybin: 25, LSD: 0.1}):
        #: drug effects are reported at this dose.
        dose_reference: dict[str, float] = field(default_factory=dict)
        #: A slope on minutes_since_dose for drug scans (per hour).
        time: bool = False
        #: Minutes after dosing at which drug effects are reported (null: mean of drug scans).
        time_reference: Optional[float] = None
        #: A slope on each scan's session_order (per session, pooled across pairs like the FD
        #: slope): effects at equal session order. Datasets that always scan the drug after a
        #: baseline (pre/post) carry any order effect (habituation, drift) in their drug effect;
        #: the slope learns it where drug and control sessions come in either order
        #: (counterbalanced crossovers) and takes it out of them. null: on whenever every scan
        #: has a session_order and some subject has a control scan after a drug scan; true:
        #: required; false: never. With +0.02 Fisher z per session planted (calibration scenario
        #: order_effect), null summary overall effects covered 0.88 without it and 0.94 with it,
        #: at the same interval widths. It costs sampling time: 87 -> 116 s on the 325-pair
        #: benchmark (benchmarks/default_experiment.py --level subnetwork).
        session_order: Optional[bool] = None
        #: Save prior and posterior predictive check figures.
        predictive_checks: bool = True
        #: Kept for the command line of earlier versions: this model is always "marginal"
        #: (means integrated out) with a normal likelihood; see pooling=pymc_paired for others.
        parametrization: Parametrization = Parametrization.marginal
        likelihood: Likelihood = Likelihood.normal
        priors: ScanPriors = field(default_factory=ScanPriors)

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        validate_sampler_config(c)
        if c.drug_effects == "fixed" and centred_on_overall(c):
            key = "pooling.drug_scale=true" if c.drug_scale else f"pooling.pair_prior={c.pair_prior}"
            raise ConfigError(f"config key 'pooling.drug_effects' is 'fixed', but {key} centres the drugs on the "
                              "overall effect (random drug effects); set pooling.drug_effects=random or null")
        for key, allowed in (("parametrization", "marginal"), ("likelihood", "normal")):
            if getattr(c, key) != allowed:
                raise ConfigError(
                    f"config key 'pooling.{key}' is '{getattr(c, key)}'; the scan-level model pooling=pymc supports "
                    f"only '{allowed}' (use pooling=pymc_paired for the sampled parametrisations and student_t)"
                )
        if c.dose and not c.dose_reference:
            raise ConfigError("config key 'pooling.dose' is true but 'pooling.dose_reference' is empty; give a "
                              "reference dose per drug, e.g. pooling.dose_reference={psilocybin: 25, LSD: 0.1}")

    # -- the design ---------------------------------------------------------------------

    def covariates(self, design: ScanDesign):
        c = self.config
        motion, note = motion_on(design, c.motion)
        order, order_note = self.order_on(design)
        x, names, scales, notes = covariate_matrix(
            design, motion, dict(c.dose_reference) if c.dose else None, c.time, c.time_reference, order)
        return x, names, scales, [n for n in (note, order_note) if n] + notes

    def order_on(self, design: ScanDesign) -> tuple[bool, str]:
        """pooling.session_order: null adjusts whenever the scans can tell an order effect from the drug's."""
        return session_order_on(design, self.config.session_order)

    # -- the model ------------------------------------------------------------------------

    def build_model(self, design: ScanDesign, st: ScanStatistics, names: list[str], scales: dict[str, float],
                    is_summary: np.ndarray):
        import pymc as pm
        import pytensor
        import pytensor.tensor as pt

        c = self.config
        p = c.priors
        n_pairs = design.y.shape[1]
        classes = pair_classes(design, is_summary)
        coords = {"pair": pair_names(design), "site": design.datasets, "pair_class": sorted(set(classes) - {""}),
                  "drug": design.drugs, "dataset": design.units}
        with pm.Model(coords=coords) as model:
            sigma, omega = site_sds(p, len(design.datasets))
            drug_het, dataset_het = heterogeneity_kinds(c)
            tau_k = heterogeneity_sds("tau_dataset", p.dataset_sd, dataset_het, n_pairs, design.use_dataset_level)
            if fixed_drugs(c, design):  # the overall effect pinned at 0, each drug Normal(0, effect_sd)
                tau_d, prior_mean, prior_sd = pt.ones(n_pairs) * p.effect_sd, pt.zeros(n_pairs), pt.zeros(n_pairs)
            else:
                tau_d = heterogeneity_sds("tau_drug", p.drug_sd, drug_het, n_pairs, design.use_drug_level)
                prior_mean, prior_sd = overall_prior(c.pair_prior, p.effect_sd, classes, coords["pair_class"])
            rows = []
            for name in names:
                if name.startswith("dose:"):
                    continue
                b = pooled_slope(name, p.effect_sd)
                # shared, not a constant: models of two datasets stay one graph (compiled_models)
                scale = pytensor.shared(np.float64(scales.get(name, 1.0)), name=f"covariate_scale:{name}")
                pm.Deterministic(f"slope:{name}", b / scale, dims="pair")
                rows.append(b)
            dose = [n for n in names if n.startswith("dose:")]
            if dose:  # drug-specific slopes around a per-pair mean
                mean = pm.Normal("dose_slope_mean", 0.0, p.effect_sd, dims="pair")
                spread = pm.HalfNormal("dose_slope_spread", p.effect_sd)
                z = pm.Normal("dose_slope_z", 0.0, 1.0, shape=(len(dose), n_pairs))
                b = mean[None, :] + spread * z
                for i, name in enumerate(dose):
                    pm.Deterministic(f"slope:{name}", b[i], dims="pair")
                    rows.append(b[i])
            slopes = pt.stack(rows) if rows else None
            scale = drug_scales(p.drug_scale_sd) if c.drug_scale and len(design.drugs) > 1 else None
            unit_scale = dataset_scales(p.dataset_scale_sd, design.unit_drug) if uses_dataset_scales(c, design) else None
            pm.Potential("marginal_loglik",
                         scan_marginal_loglik(st, sigma, omega, slopes, tau_d, tau_k, prior_mean, prior_sd, scale,
                                              unit_scale))
        return model

    def prepare(self, pairs: pd.DataFrame) -> FitInputs:
        """What the model is built from: the scan design, covariates (dose columns last) and the
        sufficient statistics; also how tests build the model without sampling it."""
        c = self.config
        design = scan_design(pairs)
        contrast_pairs(design.drugs, c.contrasts, absent_drugs(pairs), say=True)  # refuse unknown drugs before sampling
        x, names, scales, cov_notes = self.covariates(design)
        if c.drug_scale and len(design.drugs) < 2:
            cov_notes.append("pooling.drug_scale=true has no effect with a single drug")
        if c.dataset_scale and not uses_dataset_scales(c, design):
            cov_notes.append("pooling.dataset_scale=true has no effect: no drug has two or more datasets to learn "
                             "how datasets of one drug differ in strength from")
        order = [n for n in names if not n.startswith("dose:")] + [n for n in names if n.startswith("dose:")]
        x = x[:, [names.index(n) for n in order]] if names else x
        names = order
        st = scan_statistics(design.y, design.dataset_idx, design.subject_idx, design.unit_idx,
                             design.unit_dataset, design.unit_drug, len(design.drugs), x)
        is_summary = summary_columns(design.pairs, pairs)
        return FitInputs(design, x, names, scales, cov_notes, st, is_summary)

    def fit(self, pairs: pd.DataFrame, seed: int) -> PoolingResult:
        c = self.config
        design, x, names, scales, cov_notes, st, is_summary = self.prepare(pairs)
        model = self.build_model(design, st, names, scales, is_summary)
        sampler = resolve_sampler(c, auto="nutpie")
        start = time.perf_counter()
        idata = sample(model, c, sampler, seed, var_names=kept_variables(model))
        psi = add_effects(idata, design, st, names, scales, c.priors.effect_sd, np.random.default_rng(seed),
                          fixed=fixed_drugs(c, design), x=x, is_summary=is_summary)
        if psi is not None and np.isfinite(psi):
            cov_notes = cov_notes + [f"subjects' response strength varies with sd {psi:.2g} (a multiple of their "
                                     "dataset's effect), estimated from their within-subject changes"]
        elif psi is not None:
            why = (f"a single outcome: a subject's strength is told from noise across {MIN_PAIRS} or more"
                   if int((~is_summary).sum()) < MIN_PAIRS else
                   f"no dataset has {MIN_SUBJECTS} subjects with a drug and a control scan of their own")
            cov_notes = cov_notes + [f"how much subjects' response strength varies could not be estimated ({why}), so "
                                     "the learned dataset scales' intervals leave out the sampling of their subjects"]
        elapsed = time.perf_counter() - start
        description = self.describe_fit(design, names, sampler, cov_notes)
        result = summarise_scan_fit(design, idata, c, elapsed, description, names, cov_notes, pairs)
        predictive = {}
        if c.predictive_checks:
            figures, predictive = self.predictive_figures(model, idata, design, x, names, scales, seed)
            result.figures.update(figures)
            if not figures:
                result.warnings.append("pooling: no subject has both drug and control scans, so there are no "
                                       "predictive check figures (they compare within-subject differences)")
        labels = pair_names(design)
        loglik = None
        if c.log_likelihood != "none":
            post = thinned(idata.posterior, c.log_likelihood_draws)
            loglik = log_likelihood_group(scan_model_loglik(design, post, x, names, scales, ~is_summary,
                                                            [p for p, s in zip(labels, is_summary) if not s]),
                                          c.log_likelihood)
        observed = xr.DataArray(design.y, dims=("scan", "pair"),
                                coords={"scan": design.obs["scan_id"].astype(str).to_numpy(), "pair": labels})
        result.idata = tidy_posterior(idata, loglik, {"fc": observed, **predictive.pop("observed", {})})
        if predictive:  # the replicated within-subject differences behind the check figures
            result.idata.add_groups(predictive)
        return result

    def predictive_figures(self, model, idata, design: ScanDesign, x: np.ndarray, names: list[str],
                           scales: dict[str, float], seed: int, n: int = 40) -> tuple[dict, dict]:
        """Within-subject drug-minus-control differences against replicates from the prior and the
        posterior (subject and dataset intercepts cancel in them, so no intercept is drawn).

        Returns the figures and the replicates as InferenceData groups (prior_predictive,
        posterior_predictive, and the observed differences under "observed")."""
        import pymc as pm

        observed, rows, _, _ = paired_contrasts(design)
        if not len(rows):
            return {}, {}
        rng = np.random.default_rng(seed)
        post = idata.posterior
        total = post.sizes["chain"] * post.sizes["draw"]
        pick = np.linspace(0, total - 1, n).astype(int)

        def picked(v: np.ndarray) -> np.ndarray:  # (chain, draw, ...) -> the n picked draws
            return v.reshape(-1, *v.shape[2:])[pick]

        def draws(group, var, fallback_shape=None):
            if var not in group:
                return np.zeros(fallback_shape)
            v = group[var].to_numpy()
            return picked(v) if group is post else v.reshape(-1, *v.shape[2:])

        n_pairs = design.y.shape[1]
        per_col = [scales.get(name, 1.0) for name in names]  # slopes are stored per covariate unit

        def slopes(group):
            if not names:
                return np.zeros((n, 0, n_pairs))
            return np.stack([draws(group, f"slope:{name}") * s for name, s in zip(names, per_col)], axis=1)

        theta = picked(sample_dataset_effects(post))  # the scans' own subjects, not their populations
        replicated = replicate_contrasts(design, theta, draws(post, "sigma"), slopes(post), x, rng)
        hyper = [v for v in ("sigma", "tau_drug", "tau_dataset", "drug_scale", "dataset_scale",
                             *[f"slope:{m}" for m in names])
                 if v in model.named_vars]
        with model, warnings.catch_warnings():
            # only hyperparameters are drawn here; the effects come from their priors below, so
            # the marginal likelihood's Potential being ignored is what is wanted
            warnings.filterwarnings("ignore", message="The effect of Potentials")
            prior = pm.sample_prior_predictive(draws=n, random_seed=seed, var_names=hyper).prior
        effect_sd = self.config.priors.effect_sd
        mu = effect_sd * rng.standard_normal((n, 1, n_pairs))
        tau_d = draws(prior, "tau_drug", (n,)).reshape(n, 1, -1)
        tau_k = draws(prior, "tau_dataset", (n,)).reshape(n, 1, -1)
        scale = draws(prior, "drug_scale", (n, len(design.drugs))) + (0.0 if "drug_scale" in prior else 1.0)
        if fixed_drugs(self.config, design):  # each drug Normal(0, effect_sd) on its own
            beta = effect_sd * rng.standard_normal((n, len(design.drugs), n_pairs))
        else:
            beta = scale[:, :, None] * mu + tau_d * rng.standard_normal((n, len(design.drugs), n_pairs))
        unit_scale = draws(prior, "dataset_scale", (n, len(design.units))) + (0.0 if "dataset_scale" in prior else 1.0)
        theta = (unit_scale[:, :, None] * beta[:, design.unit_drug, :]
                 + tau_k * rng.standard_normal((n, len(design.units), n_pairs)))
        prior_rep = replicate_contrasts(design, theta, draws(prior, "sigma"), slopes(prior), x, rng)
        figures = {
            "prior_predictive": ppc_figure(observed, prior_rep, "Prior predictive check"),
            "posterior_predictive": ppc_figure(observed, replicated, "Posterior predictive check"),
        }
        dims = ("chain", "draw", "difference", "pair")
        coords = {"chain": [0], "draw": np.arange(n), "difference": np.arange(observed.shape[0]),
                  "pair": pair_names(design)}
        groups = {
            name: xr.Dataset({"within_subject_differences": xr.DataArray(rep[None], dims=dims, coords=coords)})
            for name, rep in (("prior_predictive", prior_rep), ("posterior_predictive", replicated))
        }
        groups["observed"] = {"within_subject_differences": xr.DataArray(
            observed, dims=dims[2:], coords={k: coords[k] for k in dims[2:]})}
        return figures, groups

    def describe_fit(self, design: ScanDesign, names: list[str], sampler: str, notes: list[str]) -> str:
        c = self.config
        p = c.priors
        drug_het, dataset_het = heterogeneity_kinds(c)
        terms = {"mean_fd": "each scan's mean framewise displacement (effects at equal motion)",
                 "minutes_since_dose": "minutes since dosing on drug scans",
                 "session_order": "each scan's place among its subject's sessions (effects at equal session order)",
                 "dose": "dose relative to each drug's reference dose "
                         f"({', '.join(f'{d} {v:g}' for d, v in c.dose_reference.items() if f'dose:{d}' in names)}; "
                         "drug-specific slopes "
                         "partially pooled across drugs)"}
        used = [terms[n.split(":")[0]] for n in dict.fromkeys(n.split(":")[0] for n in names)]
        fixed = fixed_drugs(c, design)
        return (
            "PyMC scan-level hierarchical model of network-pair FC (Fisher z): per network pair, every scan's FC "
            "= dataset intercept + subject intercept + drug effect of the scan's dataset (on drug scans)"
            + (" + " + " + ".join(f"slope x {u}" for u in used) if used else "")
            + " + residual; subject intercepts and residuals with per-dataset sds partially pooled across datasets "
            "(log-normal around a per-pair sd with a common per-dataset multiplier); dataset effects partially "
            "pooled around their drug's effect and "
            + (f"each drug's effect estimated on its own (fixed effects, prior Normal(0, {p.effect_sd})), the overall "
               "effect being the mean of the drugs' effects "
               if fixed else "drug effects around "
               + ("the drug's own scale x the overall effect (log scales zero-sum normal with sigma "
                  f"{p.drug_scale_sd}, so the scales' geometric mean is 1) "
                  if c.drug_scale and len(design.drugs) > 1 else "the overall effect "))
            + ("(each dataset's effects centred on its own scale x its drug's effect; the log scales of a drug's "
               f"datasets Normal(0, s) summing to zero, s ~ HalfNormal({p.dataset_scale_sd}), a drug's only dataset "
               "scale 1; drug effects and scales reported for each drug's population of datasets: its datasets' "
               "strength x exp(s xi / sqrt(n datasets)), xi ~ Normal(0, 1), drawn after the fit) "
               if uses_dataset_scales(c, design) else "")
            + f"({len(design.obs)} scans of {design.n_subjects} subjects: {design.design_summary()}; "
            f"{outcomes_text(design.pairs)}, {len(design.datasets)} datasets, {len(design.drugs)} drugs). "
            + ("Priors: " if fixed else
               f"Priors: {overall_prior_text(c.pair_prior, p.effect_sd)}, between-drug sd "
               f"{heterogeneity_text(drug_het, p.drug_sd)}, ")
            + f"between-dataset sd {heterogeneity_text(dataset_het, p.dataset_sd)}, residual sd "
            f"and subject sd parametrised as a total sd ~ LogNormal(log {np.hypot(p.sigma_sd, p.subject_sd):.3g}, 1) and a "
            f"subject share of variance ~ LogitNormal(logit {p.subject_sd ** 2 / (p.sigma_sd ** 2 + p.subject_sd ** 2):.2g}, 1) "
            f"per pair (each ~ Normal(its centre, 1) on the log / logit scale), per dataset shifted by a common "
            f"dataset term (zero-sum Normal(0, 1)) and a pair-specific deviation with spread "
            f"~ HalfNormal({p.sd_spread}); dataset intercepts flat. "
            + (f"Each covariate's slope per network pair (on the covariate's standardised scale; dose apart) ~ "
               f"Normal(m, s), pooled across pairs with m ~ Normal(0, {p.effect_sd}) and s ~ HalfNormal({p.effect_sd}). "
               if any(not n.startswith("dose:") for n in names) else "")
            + (f"The horseshoe's global scale ~ HalfNormal({p.effect_sd}). " if c.pair_prior == "horseshoe" and not fixed
               else "")
            + shared_with_summaries_text(design, names, fixed, drug_het, dataset_het, c.pair_prior,
                                         scales=(c.drug_scale and len(design.drugs) > 1, uses_dataset_scales(c, design)))
            + ("Subjects' response strength: each subject's FC change taken as their own multiple of their dataset's "
               "effect, the multiples' sd psi estimated from the within-subject changes; after the fit, the dataset "
               "effects and scales of drugs with two or more datasets are multiplied by exp(psi xi / sqrt(n "
               "subjects)), xi ~ Normal(0, 1), so that they are reported for each dataset's population of subjects, "
               "not for its sample (psi is a point estimate; its value is in the notes). "
               if uses_dataset_scales(c, design) else "")
            + "Dataset and subject intercepts and all effects are integrated out of the likelihood exactly "
            "(only the sds and slopes are sampled) and the effects drawn from their exact conditional posteriors. "
            f"NUTS ({sampler} sampler): {c.chains} chains x {c.draws} draws after {c.tune} tuning steps, "
            f"target_accept {c.target_accept}; {100 * c.hdi_prob:g}% HDIs; effects flagged when R-hat > "
            f"{c.rhat_max}, ESS < {ess_threshold(c):.0f} or any divergence."
            + ("" if not (design.notes() + notes) else " Note: " + "; ".join(design.notes() + notes) + ".")
        )


def shared_with_summaries_text(design: ScanDesign, names: list[str], fixed: bool, drug_het: str, dataset_het: str,
                               pair_prior: str, scales: tuple[bool, bool] = (False, False)) -> str:
    """The methods' sentence on what the summary outcomes share with the network pairs they
    average (whatever is learned across outcomes in this configuration), "" without summaries."""
    if not (design.pairs["network_b"] == "").any():
        return ""
    shared = ["the per-dataset shifts and the spreads of the residual and subject sds"] if len(design.datasets) > 1 else []
    for used, kind, what in ((design.use_dataset_level, dataset_het, "between-dataset"),
                             (design.use_drug_level and not fixed, drug_het, "between-drug")):
        if used and kind in ("learned", "pooled"):
            shared.append(f"the {what} sds' common scale")
        elif used and kind == "shared":
            shared.append(f"the one {what} sd")
    if any(not n.startswith("dose:") for n in names):
        shared.append("the covariate slopes' mean and spread across outcomes")
    if any(n.startswith("dose:") for n in names):
        shared.append("the spread of the drugs' dose slopes")
    drug_scales, dataset_scales = scales
    if drug_scales:
        shared.append("the drugs' scales")
    if dataset_scales:
        shared.append("the datasets' scales and their spread")
    if not shared:
        return ""
    return ("The summary outcomes share what is learned across outcomes (" + ", ".join(shared) + ") with the "
            "network pairs they average, so those pairs' scans inform it twice; "
            + ("their overall effects have their own Normal prior. " if pair_prior != "independent" and not fixed
               else "their effects have the priors above. "))


def heterogeneity_text(kind: str, scale: float) -> str:
    """The methods' words for one kind of between-drug or between-dataset sd prior."""
    return {"learned": f"s x lambda per network pair, s ~ HalfNormal({scale}) learned from all pairs, "
                       "lambda ~ HalfCauchy(1)",
            "pooled": f"s x lambda per network pair, s ~ HalfNormal({scale}), lambda ~ HalfNormal(1)",
            "per_pair": f"~ HalfNormal({scale}) per network pair, independently",
            "shared": f"~ HalfNormal({scale}), one for all network pairs"}[kind]


def overall_prior_text(kind: str, effect_sd: float) -> str:
    if kind == "horseshoe":
        return (f"each pair's overall effect ~ regularised horseshoe centred at 0 (learned global scale, "
                f"half-Cauchy local scale per pair, slab sd {effect_sd}); summaries' overall ~ Normal(0, {effect_sd})")
    if kind == "by_class":
        return (f"each pair's overall effect ~ Normal(its system-pair class's mean, a learned sd), class means "
                f"~ Normal(0, {effect_sd}), the sd ~ HalfNormal({effect_sd}); summaries' overall ~ Normal(0, {effect_sd})")
    return f"overall ~ Normal(0, {effect_sd})"


def kept_variables(model) -> list[str]:
    """Every variable but the standard-normal offsets of non-centred terms (~7,000 of them at
    subnetwork level; the posterior drops them anyway), so they are neither stored nor moved."""
    return [v.name for v in model.free_RVs if not v.name.endswith("_z")] + [v.name for v in model.deterministics]


def pair_names(design) -> list[str]:
    return [f"{a}--{b}" for a, b in zip(design.pairs["network_a"], design.pairs["network_b"])]


def pair_classes(design: ScanDesign, is_summary: np.ndarray) -> list[str]:
    """Each network pair's system-pair class (e.g. transmodal-unimodal); "" for summaries."""
    return ["" if summ else "-".join(sorted((a, b))) for a, b, summ in
            zip(design.pairs["system_a"], design.pairs["system_b"], is_summary)]


def heterogeneity_kinds(c) -> tuple[str, str]:
    """pooling.heterogeneity of the between-drug and the between-dataset sds (null: per_pair, learned)."""
    return (c.heterogeneity or "per_pair", c.heterogeneity or "learned")


def heterogeneity_sds(name: str, scale: float, heterogeneity: str, n_pairs: int, used: bool):
    """Between-drug or between-dataset sds: per pair around a learned common scale with
    heavy-tailed (learned) or half-normal (pooled) spread, per pair with a fixed prior
    (per_pair), or one for all pairs (shared)."""
    import pymc as pm
    import pytensor.tensor as pt

    if not used:
        return pt.zeros(n_pairs)
    if heterogeneity == "shared":
        return pm.HalfNormal(name, scale) * pt.ones(n_pairs)
    if heterogeneity == "per_pair":
        return pm.HalfNormal(name, scale, dims="pair")
    common = pm.HalfNormal(f"{name}_scale", scale)
    if heterogeneity == "learned":  # a horseshoe on the sds: heavy-tailed per pair
        local = pm.HalfCauchy(f"{name}_local", 1.0, dims="pair")
    else:
        local = pm.HalfNormal(f"{name}_raw", 1.0, dims="pair")
    return pm.Deterministic(name, common * local, dims="pair")


def overall_prior(kind: str, effect_sd: float, classes: list[str], class_names: list[str]):
    """Per-pair prior mean and sd of the overall effect (summaries always get Normal(0, effect_sd)).

    ``independent``: every pair Normal(0, effect_sd). ``by_class``: pairs of one system-pair class
    (e.g. transmodal-unimodal) share a learned mean and every pair scatters around it with one
    learned sd. ``horseshoe``: a regularised horseshoe (Piironen & Vehtari 2017) centred at 0:
    one learned global scale and a heavy-tailed local scale per pair, so the many near-null
    pairs are shrunk to 0 while large effects escape (slab sd = effect_sd). Only the scales are
    sampled: the effects stay integrated out.
    """
    import pymc as pm
    import pytensor.tensor as pt

    n = len(classes)
    fixed_sd = pt.as_tensor(np.full(n, effect_sd))
    is_pair = np.array([bool(k) for k in classes])
    if kind == "independent" or not is_pair.any():
        return pt.zeros(n), fixed_sd
    if kind == "horseshoe":
        tau = pm.HalfNormal("pair_effect_scale", effect_sd)  # 120-325 pairs inform it well
        local = pm.HalfCauchy("pair_effect_local", 1.0, dims="pair")
        slab2 = effect_sd ** 2
        shrunk = pt.sqrt(slab2 * local ** 2 / (slab2 + tau ** 2 * local ** 2))
        sd = pt.where(is_pair, tau * shrunk, effect_sd)
        return pt.zeros(n), pm.Deterministic("overall_prior_sd", sd, dims="pair")
    idx = np.array([class_names.index(k) if k else 0 for k in classes])
    gamma = pm.Normal("class_effect", 0.0, effect_sd, dims="pair_class")
    spread = pm.HalfNormal("pair_effect_sd", effect_sd)
    mean = pt.where(is_pair, gamma[idx], 0.0)
    sd = pt.where(is_pair, spread, effect_sd)
    return pm.Deterministic("overall_prior_mean", mean, dims="pair"), pm.Deterministic("overall_prior_sd", sd,
                                                                                         dims="pair")


def site_level(name: str, centre: float, spread_scale: float, n_sites: int):
    """A (site, pair) quantity on an unbounded scale: pair level + site shift + spread x deviation.

    The pair level has a Normal(centre, 1) prior; the site shift (common to all pairs, sums to
    zero) and the pair-specific deviations are non-centred (centred ones mixed far worse:
    R-hat 1.15-1.33 and 3-7x the leapfrog steps).
    """
    import pymc as pm

    level = pm.Normal(f"{name}_pair", centre, 1.0, dims="pair")
    if n_sites < 2:
        return level[None, :]
    shift = pm.ZeroSumNormal(f"{name}_site", sigma=1.0, dims="site")
    spread = pm.HalfNormal(f"{name}_spread", spread_scale)
    z = pm.Normal(f"{name}_z", 0.0, 1.0, dims=("site", "pair"))
    return level[None, :] + shift[:, None] + spread * z


def site_sds(priors: ScanPriors, n_sites: int):
    """Residual and subject sds per (site, pair), as a total sd and the subject share of variance.

    A subject with one scan informs only the total (sigma^2 + omega^2); parametrised by sigma
    and omega, parallel-group datasets left a ridge that NUTS could not cross (R-hat 1.48).
    Log-normal total (no FC variance is exactly 0: a half-normal prior left a long tail in
    log sd where a pair's subject sd is small), logit-normal share.
    """
    import pymc as pm
    import pytensor.tensor as pt

    total = np.hypot(priors.sigma_sd, priors.subject_sd)
    share = priors.subject_sd ** 2 / total ** 2
    log_total = site_level("log_total_sd", np.log(total), priors.sd_spread, n_sites)
    logit_share = site_level("logit_subject_share", np.log(share / (1 - share)), priors.sd_spread, n_sites)
    total = pt.exp(log_total)
    share = pm.math.sigmoid(logit_share)
    ones = pt.ones((n_sites, 1))
    sigma = pm.Deterministic("sigma", total * pt.sqrt(1.0 - share) * ones, dims=("site", "pair"))
    omega = pm.Deterministic("subject_sd", total * pt.sqrt(share) * ones, dims=("site", "pair"))
    return sigma, omega


def drug_scales(sd: float):
    """Each drug's scale, log-normal with the logs summing to zero (geometric mean 1: the overall
    effect is the pattern at the drugs' typical strength)."""
    import pymc as pm
    import pytensor.tensor as pt

    log_scale = pm.ZeroSumNormal("log_drug_scale", sigma=sd, dims="drug")
    return pm.Deterministic("drug_scale", pt.exp(log_scale), dims="drug")


def centred_on_overall(c) -> bool:
    """Drug scales and the pair priors other than independent model the overall effect as the
    centre of a population of drugs."""
    return bool(c.drug_scale) or c.pair_prior != "independent"


def fixed_drugs(c, design: ScanDesign) -> bool:
    """Drugs as fixed effects (pooling.drug_effects); with one drug its effect is the overall."""
    fixed = c.drug_effects == "fixed" or (c.drug_effects is None and not centred_on_overall(c))
    return fixed and design.use_drug_level


def uses_dataset_scales(c, design: ScanDesign) -> bool:
    """Dataset scales (pooling.dataset_scale, on unless false) need a drug with two or more
    datasets: their spread is learned there."""
    return c.dataset_scale is not False and np.bincount(np.asarray(design.unit_drug)).max() > 1


def dataset_scale_centring(unit_drug: np.ndarray) -> np.ndarray:
    """(U, U): log scales = spread x this @ z. The datasets of a drug with several have log
    scales summing to zero, so the drug's scale is their typical strength; a drug's only
    dataset has scale 1 (its strength is its drug's). How far the drug's population scale may
    lie from its datasets' is added after the fit (population_drug_effects).

    Scales free for every dataset are not identified: on a simulated study a common factor of
    them all went to ~0.13 (marginal likelihood 261 nats above 1: a free scale of the overall
    effects' prior); summing to zero over all datasets, the only datasets of two drugs went to
    ~0.02 and their drugs' scales to ~10 (removing the drug-level deviations' variance)."""
    unit_drug = np.asarray(unit_drug)
    out = np.zeros((len(unit_drug),) * 2)
    for d in np.unique(unit_drug):
        mine = np.flatnonzero(unit_drug == d)
        if len(mine) > 1:
            out[np.ix_(mine, mine)] = np.eye(len(mine)) - 1.0 / len(mine)
    return out


def population_drug_effects(beta: np.ndarray, lam: np.ndarray | None, spread: np.ndarray,
                            unit_drug: np.ndarray, rng: np.random.Generator
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(drug effects, drug scales, factors) of the drugs' populations of datasets, draw by draw.

    A drug's fitted effects are those of its n datasets' typical strength (their scales'
    geometric mean is 1); datasets stray from their drug's strength by a log-normal with the
    learned spread s, so the population's centre lies a factor f = exp(s xi / sqrt(n)),
    xi ~ Normal(0, 1), from it, and every effect of the drug (its share of the overall
    pattern and its own deviation alike, as a dataset's scale multiplies both) and its scale
    are f times the fitted ones. A drug seen in one dataset thus gets the between-dataset
    spread in its intervals. ``beta`` (N, D, P), ``lam`` (N, D) or None (all 1), ``spread``
    (N,); the factors f are (N, D)."""
    n_draws, n_drugs = beta.shape[:2]
    lam = np.ones((n_draws, n_drugs)) if lam is None else lam
    counts = np.maximum(np.bincount(np.asarray(unit_drug), minlength=n_drugs), 1)
    factor = np.exp(spread[:, None] * rng.standard_normal((n_draws, n_drugs)) / np.sqrt(counts))
    return beta * factor[:, :, None], lam * factor, factor


def dataset_scales(sd: float, unit_drug: np.ndarray):
    """Each dataset unit's scale relative to its drug: log-normal with a learned spread
    (non-centred; see dataset_scale_centring)."""
    import pymc as pm
    import pytensor.tensor as pt

    spread = pm.HalfNormal("dataset_scale_spread", sd)
    z = pm.Normal("log_dataset_scale_z", 0.0, 1.0, shape=len(unit_drug))
    centring = pt.as_tensor_variable(dataset_scale_centring(unit_drug))
    return pm.Deterministic("dataset_scale", pt.exp(spread * pt.dot(centring, z)), dims="dataset")


def pooled_slope(name: str, scale: float):
    """A covariate slope per pair (per unit of the standardised covariate), pooled across pairs."""
    import pymc as pm

    mean = pm.Normal(f"{name}_slope_mean", 0.0, scale)
    spread = pm.HalfNormal(f"{name}_slope_spread", scale)
    z = pm.Normal(f"{name}_slope_z", 0.0, 1.0, dims="pair")
    return mean + spread * z


def add_effects(idata, design: ScanDesign, st: ScanStatistics, names: list[str], scales: dict[str, float],
                effect_sd: float, rng: np.random.Generator, fixed: bool = False, x: np.ndarray | None = None,
                is_summary: np.ndarray | None = None) -> float | None:
    """Put exact conditional draws of the overall, drug and dataset effects into the posterior.

    ``fixed``: the drugs are fixed effects (the model's overall effect is pinned at 0 and each
    drug has a Normal(0, effect_sd) prior), and the overall effect is their mean. Datasets whose
    scales are learned get the factor from their subjects to their population drawn in
    (subject_response.py; ``x``, the covariate columns, and ``is_summary`` say what to estimate
    the subjects' spread from); returns that spread (None: no dataset scale learned; NaN: no
    dataset could inform it)."""
    post = idata.posterior
    n_pairs = design.y.shape[1]

    def per_pair(var):
        x = post[var].to_numpy()
        return np.broadcast_to(x[..., None], x.shape + (n_pairs,)) if x.ndim == 2 else x

    sigma = post["sigma"].to_numpy()
    n_chain, n_draw = sigma.shape[:2]

    def flat(x):
        return x.reshape(n_chain * n_draw, *x.shape[2:])

    zeros = np.zeros((n_chain * n_draw, n_pairs))
    tau_d = zeros + effect_sd if fixed else flat(per_pair("tau_drug")) if "tau_drug" in post else zeros
    tau_k = flat(per_pair("tau_dataset")) if "tau_dataset" in post else zeros
    if names:  # slopes per unit of the (standardised) covariate columns
        slopes = np.stack([post[f"slope:{n}"].to_numpy() * scales.get(n, 1.0) for n in names], axis=2)
    else:
        slopes = np.zeros((n_chain, n_draw, 0, n_pairs))
    prior_mean = flat(per_pair("overall_prior_mean")) if "overall_prior_mean" in post else zeros
    prior_sd = zeros if fixed else flat(per_pair("overall_prior_sd")) if "overall_prior_sd" in post else zeros + effect_sd
    lam = flat(post["drug_scale"].to_numpy()) if "drug_scale" in post else None
    lam_u = flat(post["dataset_scale"].to_numpy()) if "dataset_scale" in post else None
    mu, beta, theta = conditional_draws(kernel_arrays(st), flat(sigma), flat(post["subject_sd"].to_numpy()),
                                        flat(slopes), tau_d, tau_k, prior_mean, prior_sd, rng, lam_d=lam, lam_u=lam_u)
    extra = {}
    psi = None
    learned = np.bincount(design.unit_drug, minlength=len(design.drugs))[design.unit_drug] > 1
    if lam_u is not None and learned.any():
        fc = design.y - (np.asarray(x) @ slopes.mean(axis=(0, 1)) if names else 0.0)
        pairs = np.ones(n_pairs, dtype=bool) if is_summary is None else ~np.asarray(is_summary)
        psi, counts = response_spread(fc[:, pairs], design, theta.mean(axis=0)[:, pairs])
        unit_factor = population_factors(psi, counts, learned, theta.shape[0], rng)
        theta = theta * unit_factor[:, :, None]
        extra["dataset_scale_population"] = (("chain", "draw", "dataset"),
                                             (lam_u * unit_factor).reshape(n_chain, n_draw, -1))
        # the likelihood of the scans is the sample's: loo.py divides the factor back out
        extra["dataset_population_factor"] = (("chain", "draw", "dataset"), unit_factor.reshape(n_chain, n_draw, -1))
    if lam_u is not None:
        beta, population, factor = population_drug_effects(beta, lam, flat(post["dataset_scale_spread"].to_numpy()),
                                                           design.unit_drug, rng)
        # drug_similarity separates this factor, common to a drug's every pair, from per-pair noise
        extra["drug_population_factor"] = (("chain", "draw", "drug"), factor.reshape(n_chain, n_draw, -1))
        if lam is not None:  # without drug scales there is no drug scale to report
            extra["drug_scale_population"] = (("chain", "draw", "drug"), population.reshape(n_chain, n_draw, -1))
    if fixed or not design.use_drug_level:  # one drug: its (population's) effect is the overall effect
        mu = beta.mean(axis=1)
    effects = {"overall": mu.reshape(n_chain, n_draw, n_pairs),
               "drug_effect": beta.reshape(n_chain, n_draw, *beta.shape[1:]),
               "dataset_effect": theta.reshape(n_chain, n_draw, *theta.shape[1:])}
    idata.posterior = post.assign(
        overall=(("chain", "draw", "pair"), effects["overall"]),
        drug_effect=(("chain", "draw", "drug", "pair"), effects["drug_effect"]),
        dataset_effect=(("chain", "draw", "dataset", "pair"), effects["dataset_effect"]),
        **extra,
    ).assign_coords(drug=design.drugs, dataset=design.units)
    return psi
