"""The ``pymc_paired`` pooling model: one PyMC model of paired differences over every pair.

The fast special case of the scan-level model (``pymc``) for designs where each drug scan has
a control scan of the same subject: differencing removes subject and dataset intercepts, so
the model needs only one residual sd per pair. It is also the comparator for ``pymc``, and
the model to use for the sampled parametrisations or a Student-t likelihood.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import xarray as xr

from megafc.core import ConfigError, PoolingModel, PoolingResult
from megafc.stats import bfmi_warning, rhat_warning, sampler_diagnostics, sampler_healthy

from .adaptive_shrinkage import REFERENCE as ASH_REFERENCE
from .derived import (DERIVED_COLUMNS, absent_drugs, bayesian_description, contrast_blocks, contrast_pairs,
                      drug_similarity, split_summaries, subnetwork_specificity, summary_columns)
from .design import (
    PYMC_PACKAGES,
    Likelihood,
    PairedHeterogeneity,
    Parametrization,
    bayesian_references,
    SamplerConfig,
    describe,
    effects_table,
    ess_threshold,
    paired_design,
    resolve_sampler,
    sample,
    validate_sampler_config,
)
from .loo import log_likelihood_group, paired_model_loglik, thinned, tidy_posterior
from .marginal import UnitStatistics, conditional_effects, marginal_loglik, unit_statistics
from .predictive import ppc_figure
from .scan_design import doses_given, order_note


class PyMCPairedPooling(PoolingModel):
    """Joint hierarchical model of within-subject drug-minus-control differences over all network pairs."""

    name = "pymc_paired"
    packages = PYMC_PACKAGES

    @property
    def references(self) -> list[str]:
        return [*bayesian_references(self.config, auto="nutpie"), ASH_REFERENCE]
    needs_pairs = True
    fits_summaries = True

    @dataclass
    class Config(SamplerConfig):
        #: Chains run in parallel (2 cores on the reference machine).
        cores: int = 2
        #: Between-drug and between-dataset sds: one per network pair (per_pair) or one for
        #: all pairs (shared; better sampling geometry, less flexible).
        heterogeneity: PairedHeterogeneity = PairedHeterogeneity.per_pair
        #: How the effects enter NUTS: marginal (default: overall, drug and dataset effects
        #: integrated out exactly, only the sds sampled, effects drawn afterwards from their
        #: conditionals; normal likelihood only, student_t falls back to non_centered),
        #: non_centered or centered (every effect sampled).
        parametrization: Parametrization = Parametrization.marginal
        #: normal, or student_t (robust to outlying scans; one shared degrees-of-freedom).
        likelihood: Likelihood = Likelihood.normal
        #: Adjust for the drug-minus-control difference in mean FD (per pair slope).
        motion: bool = False
        #: Adjust for dose (standardised within each drug, as units differ between drugs).
        dose: bool = False
        #: A slope per session on each difference's order difference (drug session minus its
        #: control's, from the scans' session_order; not centred, so effects are at equal
        #: session order): takes an order effect learned from counterbalanced crossovers out of
        #: the pre/post datasets. null: on when every drug scan has an order difference and some
        #: has a negative one (a control after the drug); true: required; false: off.
        session_order: Optional[bool] = None
        #: Save prior and posterior predictive check figures.
        predictive_checks: bool = True

    def __init__(self, config=None):
        super().__init__(config)
        validate_sampler_config(self.config)

    def order_on(self, design) -> tuple[bool, str]:
        """pooling.session_order: whether the slope is in the model, and a note when it is not
        although it was asked for or could matter."""
        wanted = self.config.session_order
        diff = (design.obs["order_diff"].to_numpy(dtype=float) if "order_diff" in design.obs
                else np.full(len(design.obs), np.nan))
        missing = int((~np.isfinite(diff)).sum())
        if wanted and missing:
            scan = design.obs["scan_id"].to_numpy()[~np.isfinite(diff)][0]
            raise ConfigError(
                f"config key 'pooling.session_order' is true but {missing} drug scan(s) (e.g. '{scan}') or their "
                "controls have no 'session_order' column value; fill it or set pooling.session_order=false")
        if wanted is not None:
            return bool(wanted), "" if wanted else self.order_hint(design, diff)
        if "order_diff" not in design.obs:
            return False, ""
        if missing:
            return False, (f"{missing} drug scan(s) or their controls have no session_order, so effects are not "
                           "adjusted for session order (pooling.session_order=null switches it on only when "
                           "every one has it)")
        return bool((diff < 0).any()), ""

    @staticmethod
    def order_hint(design, diff: np.ndarray) -> str:
        """With the slope off: the datasets whose drug scans all come after their controls, when
        others are counterbalanced and could have taken the order effect out of them."""
        if not (np.isfinite(diff).all() and (diff < 0).any()):
            return ""
        after = pd.Series(diff > 0).groupby(design.obs["dataset"].to_numpy()).all()
        return order_note(sorted(after.index[after]), "its control")

    def covariates(self, design) -> dict[str, np.ndarray]:
        """Per-observation covariates requested in the config (FD and dose standardised; the
        session-order difference as it is, so that effects are at equal session order)."""
        out = {}
        if self.config.motion:
            fd = design.obs["fd_diff"].to_numpy(dtype=float)
            if not np.isfinite(fd).all():
                raise ConfigError(
                    f"config key 'pooling.motion' is true but {int((~np.isfinite(fd)).sum())} drug scans (or "
                    "their controls) have no mean_fd; provide mean FD or set pooling.motion=false"
                )
            out["motion"] = (fd - fd.mean()) / (fd.std() or 1.0)
        if self.config.dose:
            dose = pd.to_numeric(design.obs["dose"], errors="coerce").to_numpy(dtype=float)
            if not np.isfinite(dose).all():
                missing = design.obs.loc[~np.isfinite(dose), "dataset"].value_counts().sort_index()
                raise ConfigError(
                    f"config key 'pooling.dose' is true but {int((~np.isfinite(dose)).sum())} drug scans have no "
                    f"dose (dataset: scans {missing.to_dict()}); fill their 'dose' column, leave those datasets out "
                    "or set pooling.dose=false"
                )
            if len(constant_dose_drugs(design)) == len(design.drugs):
                raise ConfigError(
                    "config key 'pooling.dose' is true but the dose does not vary within any drug (each drug's "
                    "scans have one dose), so nothing tells its slope; set pooling.dose=false")
            z = np.zeros_like(dose)
            for d in design.drugs:  # doses are in each drug's own units: standardise within drug
                m = design.obs["drug"].to_numpy() == d
                sd = dose[m].std()
                z[m] = (dose[m] - dose[m].mean()) / sd if sd > 0 else 0.0
            out["dose"] = z
        if self.order_on(design)[0]:
            out["session_order"] = design.obs["order_diff"].to_numpy(dtype=float)
        return out

    def build_model(self, design, parametrization: str):
        """The model with drug and dataset effects sampled (centered or non_centered)."""
        import pymc as pm

        c = self.config
        p = c.priors
        covs = self.covariates(design)
        coords = _coords(design)
        centred = parametrization == "centered"
        with pm.Model(coords=coords) as model:
            mu = pm.Normal("overall", 0.0, p.effect_sd, dims="pair")
            tau_dims = "pair" if c.heterogeneity == "per_pair" else None
            if design.use_drug_level:
                tau_d = pm.HalfNormal("tau_drug", p.drug_sd, dims=tau_dims)
                if centred:
                    beta = pm.Normal("drug_effect", mu, tau_d, dims=("drug", "pair"))
                else:
                    z_d = pm.Normal("z_drug", 0.0, 1.0, dims=("drug", "pair"))
                    beta = pm.Deterministic("drug_effect", mu + tau_d * z_d, dims=("drug", "pair"))
            else:
                beta = pm.Deterministic("drug_effect", mu[None, :] + pm.math.zeros((1, len(coords["pair"]))), dims=("drug", "pair"))
            if design.use_dataset_level:
                tau_k = pm.HalfNormal("tau_dataset", p.dataset_sd, dims=tau_dims)
                if centred:
                    theta = pm.Normal("dataset_effect", beta[design.unit_drug], tau_k, dims=("dataset", "pair"))
                else:
                    z_k = pm.Normal("z_dataset", 0.0, 1.0, dims=("dataset", "pair"))
                    theta = pm.Deterministic("dataset_effect", beta[design.unit_drug] + tau_k * z_k, dims=("dataset", "pair"))
            else:
                theta = pm.Deterministic("dataset_effect", beta[design.unit_drug], dims=("dataset", "pair"))
            mean = theta[design.unit_idx]
            for name, x in covs.items():
                b = pm.Normal(f"beta_{name}", 0.0, p.effect_sd, dims="pair")
                mean = mean + x[:, None] * b[None, :]
            sigma = pm.HalfNormal("sigma", p.sigma_sd, dims="pair")
            if c.likelihood == "student_t":
                nu = pm.Gamma("nu", 2.0, 0.1)
                pm.StudentT("y", nu=nu, mu=mean, sigma=sigma, observed=design.y, dims=("obs", "pair"))
            else:
                pm.Normal("y", mean, sigma, observed=design.y, dims=("obs", "pair"))
        return model

    def build_marginal_model(self, design, stats: UnitStatistics, slope_names: list[str]):
        """The model with every effect integrated out, sampling only the sds (see :mod:`.marginal`)."""
        import pymc as pm

        c = self.config
        p = c.priors
        coords = {k: v for k, v in _coords(design).items() if k == "pair"}
        tau_dims = "pair" if c.heterogeneity == "per_pair" else None
        with pm.Model(coords=coords) as model:
            tau_d = pm.HalfNormal("tau_drug", p.drug_sd, dims=tau_dims) if design.use_drug_level else 0.0
            tau_k = pm.HalfNormal("tau_dataset", p.dataset_sd, dims=tau_dims) if design.use_dataset_level else 0.0
            slopes = [pm.Normal(name, 0.0, p.effect_sd, dims="pair") for name in slope_names]
            sigma = pm.HalfNormal("sigma", p.sigma_sd, dims="pair")
            pm.Potential("y", marginal_loglik(stats, tau_d, tau_k, sigma, slopes, p.effect_sd))
        return model

    def predictive_figures(self, model, idata, design, seed: int, parametrization: str) -> dict:
        """Prior and posterior predictive checks: observed differences vs replicated ones."""
        import pymc as pm

        n = 40
        step = max(1, idata.posterior.sizes["draw"] // (n // idata.posterior.sizes["chain"] or 1))
        thinned = idata.posterior.isel(draw=slice(None, None, step))
        if parametrization == "marginal":  # same prior as the sampled model; replicate in numpy
            full = self.build_model(design, "non_centered")
            with full:
                prior = pm.sample_prior_predictive(draws=n, random_seed=seed, var_names=["y"]).prior_predictive["y"]
            replicated = self.replicate(thinned, design, np.random.default_rng(seed))
        else:
            with model:
                prior = pm.sample_prior_predictive(draws=n, random_seed=seed, var_names=["y"]).prior_predictive["y"]
                post = pm.sample_posterior_predictive(thinned, random_seed=seed, var_names=["y"], progressbar=False)
            replicated = post.posterior_predictive["y"].to_numpy()
        return {
            "prior_predictive": ppc_figure(design.y, prior.to_numpy(), "Prior predictive check"),
            "posterior_predictive": ppc_figure(design.y, replicated, "Posterior predictive check"),
        }

    def replicate(self, posterior, design, rng: np.random.Generator) -> np.ndarray:
        """Replicated paired differences (draws, scans, pairs) from a normal-likelihood posterior."""
        theta = posterior["dataset_effect"].to_numpy()
        mean = theta.reshape(-1, *theta.shape[2:])[:, design.unit_idx, :]
        for name, x in self.covariates(design).items():
            b = posterior[f"beta_{name}"].to_numpy().reshape(-1, theta.shape[-1])
            mean = mean + x[None, :, None] * b[:, None, :]
        sigma = posterior["sigma"].to_numpy().reshape(-1, 1, theta.shape[-1])
        return mean + sigma * rng.standard_normal(mean.shape)

    def fit(self, pairs: pd.DataFrame, seed: int) -> PoolingResult:
        c = self.config
        design = paired_design(pairs)
        contrast_pairs(design.drugs, c.contrasts, absent_drugs(pairs), say=True)  # refuse unknown drugs before sampling
        parametrization, fallback = c.parametrization, ""
        if parametrization == "marginal" and c.likelihood != "normal":
            parametrization = "non_centered"
            fallback = (f" The {c.likelihood} likelihood has no closed-form marginal, so drug and dataset "
                        "effects were sampled (non-centred) instead of integrated out.")
        if parametrization == "marginal":
            covs = self.covariates(design)
            x = np.column_stack(list(covs.values())) if covs else np.zeros((len(design.obs), 0))
            stats = unit_statistics(design.y, design.unit_idx, design.unit_drug, len(design.drugs), x)
            slope_names = [f"beta_{name}" for name in covs]
            model = self.build_marginal_model(design, stats, slope_names)
        else:
            model = self.build_model(design, parametrization)
        sampler = resolve_sampler(c, auto="nutpie")
        start = time.perf_counter()
        idata = sample(model, c, sampler, seed)
        if parametrization == "marginal":
            add_group_effects(idata, design, stats, slope_names, c.priors.effect_sd, np.random.default_rng(seed))
        elapsed = time.perf_counter() - start
        ordered, order_note = self.order_on(design)
        constant = constant_dose_drugs(design) if c.dose else []
        options = (f" Likelihood: {c.likelihood}; {PARAMETRIZATIONS[parametrization]}; "
                   f"between-drug/dataset sds {c.heterogeneity.replace('_', ' ')}"
                   + ("; adjusted for the change in mean FD" if c.motion else
                      "; not adjusted for motion (pooling.motion=false)")
                   + ("; adjusted for dose (standardised within drug; covariate:dose rows, per within-drug sd "
                      "of dose" + (f"; learned from the drugs whose dose varies, not {constant}" if constant else "")
                      + ")" if c.dose else "")
                   + ("; adjusted for session order (a slope per session of the drug session's place after its "
                      "control's, per pair; effects at equal session order)" if ordered else "")
                   + "." + fallback + (f" Note: {order_note}." if order_note else ""))
        post = idata.posterior
        fd_sd = float(np.nanstd(design.obs["fd_diff"].to_numpy(dtype=float))) if "beta_motion" in post else 1.0
        # the FD slope per mm of the drug-minus-control FD change (the model's is per sd), as the
        # scan-level model reports its covariate:mean_fd rows
        # the dose slope per sd of dose within drug (doses are in each drug's own units)
        slopes = ([("mean_fd", post["beta_motion"].to_numpy() / (fd_sd or 1.0))] if "beta_motion" in post else []) \
            + ([("dose", post["beta_dose"].to_numpy())] if "beta_dose" in post else []) \
            + ([("session_order", post["beta_session_order"].to_numpy())] if "beta_session_order" in post else [])
        result = summarise_fit(design, idata, c, elapsed, describe(design, "PyMC joint model (pymc_paired)", c, sampler) + options,
                               pairs, slopes=slopes,
                               adjusted_for=(["mean_fd"] if c.motion else []) + (["dose"] if c.dose else [])
                               + (["session_order"] if ordered else []))
        if constant:
            result.warnings.append(f"pooling: pooling.dose: each of {constant}'s scans have one dose, so the dose "
                                   "slope is learned from the other drugs only")
        if c.predictive_checks:
            result.figures.update(self.predictive_figures(model, idata, design, seed, parametrization))
        is_pair = ~summary_columns(design.pairs, pairs)
        coords = _coords(design)
        loglik = None
        if c.log_likelihood != "none":
            labels = [p for p, keep in zip(coords["pair"], is_pair) if keep]
            post = thinned(idata.posterior, c.log_likelihood_draws)
            loglik = log_likelihood_group(paired_model_loglik(design, post, self.covariates(design), is_pair,
                                                              labels, c.likelihood),
                                          c.log_likelihood)
        observed = xr.DataArray(design.y, dims=("obs", "pair"), coords={"obs": coords["obs"], "pair": coords["pair"]})
        result.idata = tidy_posterior(idata, loglik, {"fc_difference": observed})
        return result


PARAMETRIZATIONS = {
    "marginal": "overall, drug and dataset effects integrated out of the likelihood (only the sds sampled) "
                "and drawn from their exact conditional posteriors after sampling",
    "non_centered": "non-centred parametrisation",
    "centered": "centred parametrisation",
}


def constant_dose_drugs(design) -> list[str]:
    """Drugs whose scans all have one dose: they tell nothing of the dose slope."""
    given = doses_given(design.obs["dose"].to_numpy(), design.obs["drug"].to_numpy(), design.drugs)
    return [d for d, doses in given.items() if len(doses) < 2]


def _coords(design) -> dict[str, list]:
    return {
        "pair": [f"{a}--{b}" for a, b in zip(design.pairs["network_a"], design.pairs["network_b"])],
        "drug": design.drugs,
        "dataset": design.units,
        "obs": design.obs["scan_id"].tolist(),
    }


def add_group_effects(idata, design, stats: UnitStatistics, slope_names: list[str], effect_sd: float, rng) -> None:
    """Put conditional draws of the integrated-out effects into the posterior."""
    post = idata.posterior
    draws = {name: post[name].to_numpy() for name in ("tau_drug", "tau_dataset", "sigma", *slope_names) if name in post}
    effects = conditional_effects(stats, draws, slope_names, effect_sd, rng)
    coords = _coords(design)
    idata.posterior = post.assign(
        overall=(("chain", "draw", "pair"), effects["overall"]),
        drug_effect=(("chain", "draw", "drug", "pair"), effects["drug_effect"]),
        dataset_effect=(("chain", "draw", "dataset", "pair"), effects["dataset_effect"]),
    ).assign_coords(drug=coords["drug"], dataset=coords["dataset"])


def summarise_fit(design, idata, c: SamplerConfig, elapsed: float, description: str, table: pd.DataFrame,
                  slopes: list | None = None, adjusted_for: list[str] | None = None) -> PoolingResult:
    """The result; ``slopes`` (name, draws (chain, draw, pair)) become ``covariate:<name>`` rows;
    ``adjusted_for``: the scan covariates the effects are adjusted for."""
    post = idata.posterior
    divergences = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0
    overall = post["overall"].to_numpy()
    drug = post["drug_effect"].to_numpy()
    dataset = post["dataset_effect"].to_numpy()
    main = [("overall", "overall", "", overall)]
    main += [(f"drug:{d}", "drug", d, drug[:, :, i]) for i, d in enumerate(design.drugs)]
    blocks = (main + contrast_blocks(design.drugs, drug, c.contrasts, absent_drugs(table)) if len(design.drugs) > 1
              else list(main))
    blocks += [(f"dataset:{u}", "dataset", u, dataset[:, :, i]) for i, u in enumerate(design.units)]
    blocks += [(f"covariate:{name}", "covariate", name, np.asarray(draws)) for name, draws in slopes or []]
    effects = effects_table(design, blocks, divergences=divergences, config=c)
    effects, summaries = split_summaries(effects, table)
    tables = {} if summaries is None else {"summaries": summaries}
    specificity = subnetwork_specificity(design.pairs, table, main, c.hdi_prob)
    if specificity is not None:
        tables["specificity"] = specificity
    if len(design.drugs) > 1:
        tables["drug_similarity"] = drug_similarity(design.drugs, drug[..., ~summary_columns(design.pairs, table)],
                                                    c.hdi_prob)
    sampled = [v for v in ("overall", "tau_drug", "z_drug", "tau_dataset", "z_dataset", "sigma", "nu",
                           "beta_motion", "beta_dose", "beta_session_order") if v in post]
    if "z_drug" not in post and "z_dataset" not in post:  # centred, or drawn from conditionals (marginal)
        sampled += ["drug_effect", "dataset_effect"]
    diagnostics = sampler_diagnostics(idata, sampled, c.rhat_max, ess_threshold(c))
    diagnostics["sampling_seconds"] = round(elapsed, 2)
    warnings = []
    if divergences:
        warnings.append(f"pooling: {divergences} divergent transitions; posteriors may be biased")
    warnings += [w for w in [rhat_warning(diagnostics, c.rhat_max), bfmi_warning(diagnostics)] if w]
    warnings += [f"pooling: {n}" for n in design.notes()]
    return PoolingResult(effects=effects, diagnostics=diagnostics, idata=idata,
                         description=bayesian_description(description, effects, tables), warnings=warnings,
                         tables=tables,
                         interval=f"{100 * c.hdi_prob:g}% HDI", sampler_ok=sampler_healthy(diagnostics),
                         adjusted_for=adjusted_for, columns=DERIVED_COLUMNS)
