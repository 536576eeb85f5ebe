"""The ``pymc`` pooling model: one PyMC model over every network pair at once."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from megafc.core import ConfigError, PoolingModel, PoolingResult, sampler_diagnostics

from .derived import contrast_blocks, drug_similarity, summary_table
from .design import (
    SamplerConfig,
    describe,
    effects_table,
    ess_threshold,
    paired_design,
    resolve_sampler,
    validate_sampler_config,
)


class PyMCPooling(PoolingModel):
    """Joint hierarchical model over all network pairs (vectorised PyMC, paired differences)."""

    name = "pymc"

    @dataclass
    class Config(SamplerConfig):
        #: Chains run in parallel (2 cores on the reference machine).
        cores: int = 2
        #: Between-drug and between-dataset sds: one per network pair (per_pair) or one for
        #: all pairs (shared; better sampling geometry, less flexible).
        heterogeneity: str = "per_pair"

    def __init__(self, config=None):
        super().__init__(config)
        validate_sampler_config(self.config)
        if self.config.heterogeneity not in ("per_pair", "shared"):
            raise ConfigError(
                f"config key 'pooling.heterogeneity' is '{self.config.heterogeneity}'; "
                "expected 'per_pair' or 'shared'"
            )

    def build_model(self, design):
        import pymc as pm

        p = self.config.priors
        coords = {
            "pair": [f"{a}--{b}" for a, b in zip(design.pairs["network_a"], design.pairs["network_b"])],
            "drug": design.drugs,
            "dataset": design.units,
            "obs": design.obs["scan_id"].tolist(),
        }
        with pm.Model(coords=coords) as model:
            mu = pm.Normal("overall", 0.0, p.effect_sd, dims="pair")
            tau_dims = "pair" if self.config.heterogeneity == "per_pair" else None
            if design.use_drug_level:
                tau_d = pm.HalfNormal("tau_drug", p.drug_sd, dims=tau_dims)
                z_d = pm.Normal("z_drug", 0.0, 1.0, dims=("drug", "pair"))
                beta = pm.Deterministic("drug_effect", mu + tau_d * z_d, dims=("drug", "pair"))
            else:
                beta = pm.Deterministic("drug_effect", mu[None, :] + pm.math.zeros((1, len(coords["pair"]))), dims=("drug", "pair"))
            if design.use_dataset_level:
                tau_k = pm.HalfNormal("tau_dataset", p.dataset_sd, dims=tau_dims)
                z_k = pm.Normal("z_dataset", 0.0, 1.0, dims=("dataset", "pair"))
                theta = pm.Deterministic("dataset_effect", beta[design.unit_drug] + tau_k * z_k, dims=("dataset", "pair"))
            else:
                theta = pm.Deterministic("dataset_effect", beta[design.unit_drug], dims=("dataset", "pair"))
            sigma = pm.HalfNormal("sigma", p.sigma_sd, dims="pair")
            pm.Normal("y", theta[design.unit_idx], sigma, observed=design.y, dims=("obs", "pair"))
        return model

    def fit(self, pairs: pd.DataFrame, seed: int) -> PoolingResult:
        import pymc as pm

        c = self.config
        design = paired_design(pairs)
        model = self.build_model(design)
        sampler = resolve_sampler(c, auto="nutpie")
        start = time.perf_counter()
        with model:
            idata = pm.sample(
                draws=c.draws, tune=c.tune, chains=c.chains, cores=min(c.cores, c.chains),
                target_accept=c.target_accept, random_seed=seed, progressbar=c.progressbar,
                nuts_sampler=sampler, compute_convergence_checks=False,
            )
        elapsed = time.perf_counter() - start
        return summarise_fit(design, idata, c, elapsed, describe(design, "PyMC joint model", c, sampler))


def summarise_fit(design, idata, c: SamplerConfig, elapsed: float, description: str) -> PoolingResult:
    post = idata.posterior
    divergences = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0
    overall = post["overall"].to_numpy()
    drug = post["drug_effect"].to_numpy()
    dataset = post["dataset_effect"].to_numpy()
    main = [("overall", "overall", "", overall)]
    main += [(f"drug:{d}", "drug", d, drug[:, :, i]) for i, d in enumerate(design.drugs)]
    blocks = main + contrast_blocks(design.drugs, drug, c.contrasts) if len(design.drugs) > 1 else list(main)
    blocks += [(f"dataset:{u}", "dataset", u, dataset[:, :, i]) for i, u in enumerate(design.units)]
    effects = effects_table(design, blocks, divergences=divergences, config=c)
    tables = {"summaries": summary_table(design.pairs, main, c.hdi_prob, c.rope)}
    if len(design.drugs) > 1:
        tables["drug_similarity"] = drug_similarity(design.drugs, drug, c.hdi_prob)
    sampled = [v for v in ("overall", "tau_drug", "z_drug", "tau_dataset", "z_dataset", "sigma", "nu",
                           "beta_motion", "beta_dose") if v in post]
    diagnostics = sampler_diagnostics(idata, sampled, c.rhat_max, ess_threshold(c))
    diagnostics["sampling_seconds"] = round(elapsed, 2)
    warnings = []
    if divergences:
        warnings.append(f"pooling: {divergences} divergent transitions; posteriors may be biased")
    rmax = float(diagnostics["r_hat_max"].max()) if len(diagnostics) else np.nan
    if rmax > c.rhat_max:
        warnings.append(f"pooling: max R-hat {rmax:.3f} > {c.rhat_max}; chains have not converged")
    warnings += [f"pooling: {n}" for n in design.notes()]
    return PoolingResult(effects=effects, diagnostics=diagnostics, idata=idata, description=description,
                         warnings=warnings, tables=tables)
