"""The ``bambi`` pooling model: the scan-level model of ``pymc``, one bambi formula per pair.

Slower (one model per network pair, every random effect sampled) but readable: the formula is
the model. Per pair::

    fc ~ 0 + dataset + drug_scan + (0 + drug_scan | drug) + (0 + drug_scan | unit)
         + mean_fd + (0 + dataset | subject)
    sigma ~ 1 + (1 | dataset)                      (log link)

``drug_scan`` is 1 on drug scans: its slope is the overall effect, its drug- and
unit-specific slopes the drug and dataset deviations; ``(0 + dataset | subject)`` gives
subject intercepts with one sd per dataset; ``sigma ~ (1 | dataset)`` a residual sd per dataset,
log-normal around the pair's. What bambi cannot express of ``pymc``: the per-dataset sds are
pooled within the pair only (``pymc`` also shares a per-dataset multiplier across pairs), the
subject sds are not pooled across datasets, and the FD slope is not pooled across pairs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
import xarray as xr

from megafc.core import PoolingModel, PoolingResult

from .adaptive_shrinkage import REFERENCE as ASH_REFERENCE
from .derived import absent_drugs, contrast_pairs, summary_columns
from .design import (PYMC_PACKAGES, SamplerConfig, bayesian_references, ess_threshold, nuts_kwargs, outcomes_text,
                     resolve_sampler, validate_sampler_config)
from .loo import log_likelihood_group, scan_model_loglik, thinned, tidy_posterior
from .pymc_scan_level import ScanPriors
from .scan_design import ScanDesign, covariate_matrix, scan_design, session_order_on
from .scan_results import summarise_scan_fit

log = logging.getLogger("megafc")

BAMBI_REFERENCE = ("Capretto T, Piho C, Kumar R, Westfall J, Yarkoni T, Martin OA (2022) Bambi: a simple interface "
                   "for fitting Bayesian linear models in Python. J Stat Softw 103(15):1-29")


class BambiPooling(PoolingModel):
    """Scan-level hierarchical model per network pair as a bambi formula (the pymc model, every effect sampled)."""

    name = "bambi"
    packages = ("bambi", "formulae", *PYMC_PACKAGES)

    @property
    def references(self) -> list[str]:
        return [*bayesian_references(self.config, auto="pymc"), BAMBI_REFERENCE, ASH_REFERENCE]
    fits_summaries = True

    @dataclass
    class Config(SamplerConfig):
        #: Show PyMC's progress bar for each pair's fit (a per-pair log line is always shown).
        progressbar: bool = False
        #: Adjust for each scan's mean FD: null = whenever every scan has mean_fd.
        motion: bool | None = None
        #: A slope on each scan's session_order (per session, centred: effects at equal session
        #: order), as in ``pymc`` but per pair: null = whenever every scan has it and some
        #: subject has a control scan after a drug scan; true: required; false: off.
        session_order: Optional[bool] = None
        priors: ScanPriors = field(default_factory=ScanPriors)

    def __init__(self, config=None):
        super().__init__(config)
        validate_sampler_config(self.config)

    def formula(self, design: ScanDesign, motion: bool, order: bool = False):
        import bambi as bmb

        terms = ["0", "dataset", "drug_scan"]
        if design.use_drug_level:
            terms.append("(0 + drug_scan|drug)")
        if design.use_dataset_level:
            terms.append("(0 + drug_scan|unit)")
        if motion:
            terms.append("mean_fd")
        if order:
            terms.append("session_order")
        terms.append("(0 + dataset|subject)")
        sigma = "sigma ~ 1 + (1|dataset)" if len(design.datasets) > 1 else "sigma ~ 1"
        return bmb.Formula("fc ~ " + " + ".join(terms), sigma)

    def priors(self, design: ScanDesign, y: np.ndarray) -> dict:
        import bambi as bmb

        p = self.config.priors
        out = {
            "dataset": bmb.Prior("Normal", mu=float(np.mean(y)), sigma=1.0),  # ~flat on the FC scale
            "drug_scan": bmb.Prior("Normal", mu=0, sigma=p.effect_sd),
            "mean_fd": bmb.Prior("Normal", mu=0, sigma=p.effect_sd),
            "session_order": bmb.Prior("Normal", mu=0, sigma=p.effect_sd),
            "dataset|subject": bmb.Prior("Normal", mu=0, sigma=bmb.Prior("LogNormal", mu=np.log(p.subject_sd), sigma=1.0)),
            "sigma_Intercept": bmb.Prior("Normal", mu=np.log(p.sigma_sd), sigma=1.0),
            "sigma_1|dataset": bmb.Prior("Normal", mu=0, sigma=bmb.Prior("HalfNormal", sigma=p.sd_spread)),
        }
        if design.use_drug_level:
            out["drug_scan|drug"] = bmb.Prior("Normal", mu=0, sigma=bmb.Prior("HalfNormal", sigma=p.drug_sd))
        if design.use_dataset_level:
            out["drug_scan|unit"] = bmb.Prior("Normal", mu=0, sigma=bmb.Prior("HalfNormal", sigma=p.dataset_sd))
        return out

    def fit(self, pairs: pd.DataFrame, seed: int) -> PoolingResult:
        import arviz as az
        import bambi as bmb

        c = self.config
        design = scan_design(pairs)
        contrast_pairs(design.drugs, c.contrasts, absent_drugs(pairs), say=True)  # refuse unknown drugs before sampling
        fd_known = bool(np.isfinite(pd.to_numeric(design.obs["mean_fd"], errors="coerce")).all())
        motion = fd_known if c.motion is None else bool(c.motion)
        order, order_note = session_order_on(design, c.session_order)
        x, names, scales, notes = covariate_matrix(design, motion, order=order)
        notes = [order_note, *notes] if order_note else notes
        formula = self.formula(design, motion, order)
        obs = design.obs
        # control scans need some drug/unit level: their drug_scan is 0, so the level is inert
        first_unit = {ds: design.units[u] for u, ds in zip(range(len(design.units)), design.unit_dataset)}
        unit = [design.units[u] if u >= 0 else first_unit[k] for u, k in zip(design.unit_idx, design.dataset_idx)]
        drug = [design.drugs[design.unit_drug[design.units.index(u)]] for u in unit]
        frame = pd.DataFrame({
            "dataset": pd.Categorical(obs["dataset"], categories=design.datasets),
            "drug_scan": design.is_drug.astype(float),
            "drug": pd.Categorical(drug, categories=design.drugs),
            "unit": pd.Categorical(unit, categories=design.units),
            "subject": (obs["dataset"] + "/" + obs["subject"]).to_numpy(),
        })
        for name in names:  # mean_fd and session_order, as the pymc model has them
            frame[name] = x[:, names.index(name)]
        n_pairs = design.y.shape[1]
        keys = ("overall", "drug_effect", "dataset_effect", "sigma", "subject_sd", "tau_drug", "tau_dataset",
                "slope:mean_fd", "slope:session_order")
        draws = {k: [] for k in keys}
        diverging = []
        sampler = resolve_sampler(c, auto="pymc")
        sample_kwargs = {k: v for k, v in nuts_kwargs(c, sampler).items() if k != "nuts_sampler"}
        start = time.perf_counter()
        for p in range(n_pairs):
            frame["fc"] = design.y[:, p]
            model = bmb.Model(formula, frame, priors=self.priors(design, design.y[:, p]))
            idata = model.fit(
                draws=c.draws, tune=c.tune, chains=c.chains, cores=min(c.cores, c.chains),
                random_seed=seed + p, progressbar=c.progressbar, compute_convergence_checks=False,
                inference_method=sampler, **sample_kwargs,
            )
            self._collect(idata.posterior, design, names, scales, draws)
            diverging.append(idata.sample_stats["diverging"].to_numpy())
            log.info("bambi: network pair %d/%d fitted (%s--%s)", p + 1, n_pairs,
                     design.pairs["network_a"].iloc[p], design.pairs["network_b"].iloc[p])
        elapsed = time.perf_counter() - start
        pair_names = [f"{a}--{b}" for a, b in zip(design.pairs["network_a"], design.pairs["network_b"])]
        dims = {"overall": ["pair"], "drug_effect": ["drug", "pair"], "dataset_effect": ["dataset", "pair"],
                "sigma": ["site", "pair"], "subject_sd": ["site", "pair"], "tau_drug": ["pair"],
                "tau_dataset": ["pair"], "slope:mean_fd": ["pair"], "slope:session_order": ["pair"]}
        posterior = {k: np.stack(v, axis=-1) for k, v in draws.items() if v}
        idata = az.from_dict(
            posterior=posterior,
            sample_stats={"diverging": np.stack(diverging, axis=-1)},
            coords={"pair": pair_names, "drug": design.drugs, "dataset": design.units, "site": design.datasets},
            dims={k: v for k, v in dims.items() if k in posterior},
            attrs={"modeling_interface": "bambi", "formula": str(formula)},
        )
        result = summarise_scan_fit(design, idata, c, elapsed,
                                    self.describe_fit(design, formula, sampler, motion, order), names, notes, pairs)
        loglik = None
        if c.log_likelihood != "none":  # the same subjects' likelihood as pymc's, from bambi's draws
            is_summary = summary_columns(design.pairs, pairs)
            loglik = log_likelihood_group(
                scan_model_loglik(design, thinned(idata.posterior, c.log_likelihood_draws), x, names, scales,
                                  ~is_summary, [n for n, s in zip(pair_names, is_summary) if not s]),
                c.log_likelihood)
        observed = xr.DataArray(design.y, dims=("scan", "pair"),
                                coords={"scan": obs["scan_id"].astype(str).to_numpy(), "pair": pair_names})
        result.idata = tidy_posterior(idata, loglik, {"fc": observed})
        return result

    @staticmethod
    def _collect(post, design: ScanDesign, names: list[str], scales: dict, draws: dict) -> None:
        """One pair's draws in the scan-level models' variable layout."""
        mu = post["drug_scan"].to_numpy()
        beta = np.repeat(mu[:, :, None], len(design.drugs), axis=2)
        if design.use_drug_level:
            beta = beta + post["drug_scan|drug"].sel(drug__factor_dim=design.drugs).to_numpy()
        theta = beta[:, :, design.unit_drug]
        if design.use_dataset_level:
            theta = theta + post["drug_scan|unit"].sel(unit__factor_dim=design.units).to_numpy()
        log_sigma = post["sigma_Intercept"].to_numpy()[:, :, None]
        if "sigma_1|dataset" in post:
            log_sigma = log_sigma + post["sigma_1|dataset"].sel(dataset__factor_dim=design.datasets).to_numpy()
        sub = post["dataset|subject_sigma"]
        sub = sub.sel({sub.dims[-1]: design.datasets}).to_numpy() if sub.ndim == 3 else sub.to_numpy()[:, :, None]
        draws["overall"].append(mu)
        draws["drug_effect"].append(beta)
        draws["dataset_effect"].append(theta)
        draws["sigma"].append(np.exp(log_sigma) * np.ones((1, 1, len(design.datasets))))
        draws["subject_sd"].append(sub * np.ones((1, 1, len(design.datasets))))
        if design.use_drug_level:
            draws["tau_drug"].append(post["drug_scan|drug_sigma"].to_numpy())
        if design.use_dataset_level:
            draws["tau_dataset"].append(post["drug_scan|unit_sigma"].to_numpy())
        for name in names:  # per unit of the covariate (mean_fd per mm; session_order per session)
            draws[f"slope:{name}"].append(post[name].to_numpy() / scales[name])

    def describe_fit(self, design: ScanDesign, formula, sampler: str, motion: bool, order: bool = False) -> str:
        c = self.config
        p = c.priors
        return (
            f"bambi, one scan-level model per network pair (formula `{formula}`; drug_scan is 1 on drug scans, "
            "unit the dataset (or dataset and drug)): dataset intercepts, subject intercepts with a per-dataset sd, "
            "a residual sd per dataset (log-normal around the pair's), the overall effect with drug and dataset "
            "deviations" + (", and a slope on standardised mean FD (effects at equal motion)" if motion else "")
            + (", and a slope on session_order, each scan's place among its subject's sessions (effects at equal "
               "session order)" if order else "")
            + f" ({len(design.obs)} scans of {design.n_subjects} subjects: {design.design_summary()}; "
            f"{outcomes_text(design.pairs)}, {len(design.datasets)} datasets, {len(design.drugs)} drugs). "
            f"Priors: overall ~ Normal(0, {p.effect_sd}), between-drug sd ~ HalfNormal({p.drug_sd}), between-dataset "
            f"sd ~ HalfNormal({p.dataset_sd}), log residual sd ~ Normal(log {p.sigma_sd}, 1) + Normal(0, "
            f"HalfNormal({p.sd_spread})) per dataset, subject sds ~ LogNormal(log {p.subject_sd}, 1). "
            f"NUTS ({sampler} sampler): {c.chains} chains x {c.draws} draws after {c.tune} tuning steps, "
            f"target_accept {c.target_accept}; {100 * c.hdi_prob:g}% HDIs; effects flagged when R-hat > "
            f"{c.rhat_max}, ESS < {ess_threshold(c):.0f} or any divergence."
            + ("" if not design.notes() else " Note: " + "; ".join(design.notes()) + ".")
        )
