"""The ``bambi`` pooling model: the same hierarchical model as ``pymc``, one formula per pair.

Slower (one model per network pair) but readable and easy to modify: the formula is the model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from megafc.core import PoolingModel, PoolingResult

from .derived import contrast_pairs
from .design import SamplerConfig, describe, paired_design, resolve_sampler, validate_sampler_config
from .pymc_joint import summarise_fit

log = logging.getLogger("megafc")


class BambiPooling(PoolingModel):
    """Hierarchical model per network pair as a bambi formula (paired differences)."""

    name = "bambi"

    @dataclass
    class Config(SamplerConfig):
        #: Show PyMC's progress bar for each pair's fit (a per-pair log line is always shown).
        progressbar: bool = False

    def __init__(self, config=None):
        super().__init__(config)
        validate_sampler_config(self.config)

    def formula(self, design) -> str:
        terms = ["1"]
        if design.use_drug_level:
            terms.append("(1|drug)")
        if design.use_dataset_level:
            terms.append("(1|dataset)")
        return "fc_diff ~ " + " + ".join(terms)

    def priors(self, design) -> dict:
        import bambi as bmb

        p = self.config.priors
        priors = {"Intercept": bmb.Prior("Normal", mu=0, sigma=p.effect_sd), "sigma": bmb.Prior("HalfNormal", sigma=p.sigma_sd)}
        if design.use_drug_level:
            priors["1|drug"] = bmb.Prior("Normal", mu=0, sigma=bmb.Prior("HalfNormal", sigma=p.drug_sd))
        if design.use_dataset_level:
            priors["1|dataset"] = bmb.Prior("Normal", mu=0, sigma=bmb.Prior("HalfNormal", sigma=p.dataset_sd))
        return priors

    def fit(self, pairs: pd.DataFrame, seed: int) -> PoolingResult:
        import arviz as az
        import bambi as bmb

        c = self.config
        design = paired_design(pairs)
        contrast_pairs(design.drugs, c.contrasts)  # refuse unknown drugs before sampling
        formula = self.formula(design)
        n_pairs = design.y.shape[1]
        nd = len(design.drugs)
        draws = {k: [] for k in ("overall", "drug_effect", "dataset_effect", "tau_drug", "tau_dataset", "sigma")}
        diverging = []
        sampler = resolve_sampler(c, auto="pymc")
        start = time.perf_counter()
        for p in range(n_pairs):
            data = pd.DataFrame({
                "fc_diff": design.y[:, p],
                "drug": pd.Categorical(np.asarray(design.drugs)[design.drug_idx], categories=design.drugs),
                "dataset": pd.Categorical(np.asarray(design.units)[design.unit_idx], categories=design.units),
            })
            model = bmb.Model(formula, data, priors=self.priors(design))
            idata = model.fit(
                draws=c.draws, tune=c.tune, chains=c.chains, cores=min(c.cores, c.chains),
                target_accept=c.target_accept, random_seed=seed + p, progressbar=c.progressbar,
                compute_convergence_checks=False, inference_method=sampler,
            )
            post = idata.posterior
            mu = post["Intercept"].to_numpy()
            ch, dr = mu.shape
            beta = np.repeat(mu[:, :, None], nd, axis=2)
            if design.use_drug_level:
                dev = post["1|drug"].sel(drug__factor_dim=design.drugs).to_numpy()
                beta = beta + dev
            theta = beta[:, :, design.unit_drug]
            if design.use_dataset_level:
                theta = theta + post["1|dataset"].sel(dataset__factor_dim=design.units).to_numpy()
            draws["overall"].append(mu)
            draws["drug_effect"].append(beta)
            draws["dataset_effect"].append(theta)
            draws["sigma"].append(post["sigma"].to_numpy())
            draws["tau_drug"].append(post["1|drug_sigma"].to_numpy() if design.use_drug_level else np.zeros((ch, dr)))
            draws["tau_dataset"].append(post["1|dataset_sigma"].to_numpy() if design.use_dataset_level else np.zeros((ch, dr)))
            diverging.append(idata.sample_stats["diverging"].to_numpy())
            log.info("bambi: network pair %d/%d fitted (%s--%s)", p + 1, n_pairs,
                     design.pairs["network_a"].iloc[p], design.pairs["network_b"].iloc[p])
        elapsed = time.perf_counter() - start
        pair_names = [f"{a}--{b}" for a, b in zip(design.pairs["network_a"], design.pairs["network_b"])]
        posterior = {
            "overall": np.stack(draws["overall"], axis=-1),
            "drug_effect": np.stack(draws["drug_effect"], axis=-1),
            "dataset_effect": np.stack(draws["dataset_effect"], axis=-1),
            "sigma": np.stack(draws["sigma"], axis=-1),
        }
        if design.use_drug_level:
            posterior["tau_drug"] = np.stack(draws["tau_drug"], axis=-1)
        if design.use_dataset_level:
            posterior["tau_dataset"] = np.stack(draws["tau_dataset"], axis=-1)
        dims = {"overall": ["pair"], "drug_effect": ["drug", "pair"], "dataset_effect": ["dataset", "pair"],
                "sigma": ["pair"], "tau_drug": ["pair"], "tau_dataset": ["pair"]}
        idata = az.from_dict(
            posterior=posterior,
            sample_stats={"diverging": np.stack(diverging, axis=-1)},
            coords={"pair": pair_names, "drug": design.drugs, "dataset": design.units},
            dims={k: v for k, v in dims.items() if k in posterior},
            attrs={"modeling_interface": "bambi", "formula": formula},
        )
        text = describe(design, f"bambi, one model per network pair (formula `{formula}`)", c, sampler)
        return summarise_fit(design, idata, c, elapsed, text)
