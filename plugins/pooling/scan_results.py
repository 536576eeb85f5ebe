"""Effects, summaries and heterogeneity of a scan-level fit (``pymc`` and ``bambi`` alike).

Both models put the same variables in their posterior: ``overall`` (pair), ``drug_effect``
(drug, pair), ``dataset_effect`` (dataset unit, pair), ``sigma`` and ``subject_sd`` (site,
pair), ``tau_drug`` / ``tau_dataset`` (pair, when the level exists) and ``slope:<covariate>``
(pair, in the covariate's own unit).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from megafc.core import PoolingResult
from megafc.stats import bfmi_warning, rhat_warning, sampler_diagnostics, sampler_healthy, summarise_draws
from megafc.stats.rhat_chance import beyond_chance

from .derived import (DERIVED_COLUMNS, absent_drugs, bayesian_description, contrast_blocks, drug_similarity,
                      scale_table, split_summaries, subnetwork_specificity, summary_columns)
from .design import effects_table, ess_threshold
from .scan_design import ScanDesign


#: The unit each covariate slope is reported in (heterogeneity.tsv "level" of slope rows).
SLOPE_UNITS = {"mean_fd": "per mm FD", "minutes_since_dose": "per hour", "dose": "per reference dose",
               "session_order": "per session"}

#: The config key that leaves each pooled covariate slope out of the model.
SLOPE_SWITCHES = {"mean_fd": "pooling.motion=false", "minutes_since_dose": "pooling.time=false",
                  "session_order": "pooling.session_order=false"}


def summarise_scan_fit(design: ScanDesign, idata, c, elapsed: float, description: str, names: list[str],
                       notes: list[str], table: pd.DataFrame) -> PoolingResult:
    """``table``: the network-pair table fitted (its attrs say which outcomes are summaries)."""
    post = idata.posterior
    divergences = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0
    drug = post["drug_effect"].to_numpy()
    main = [("overall", "overall", "", post["overall"].to_numpy())]
    main += [(f"drug:{d}", "drug", d, drug[:, :, i]) for i, d in enumerate(design.drugs)]
    blocks = (main + contrast_blocks(design.drugs, drug, c.contrasts, absent_drugs(table)) if len(design.drugs) > 1
              else list(main))
    dataset = post["dataset_effect"].to_numpy()
    blocks += [(f"dataset:{u}", "dataset", u, dataset[:, :, i]) for i, u in enumerate(design.units)]
    blocks += [(f"covariate:{n}", "covariate", n, post[f"slope:{n}"].to_numpy()) for n in names]
    effects, summaries = split_summaries(effects_table(design, blocks, divergences=divergences, config=c), table)
    is_pair = ~summary_columns(design.pairs, table)
    het_all = heterogeneity_table(design, post, c.hdi_prob, names)
    tables = {"heterogeneity": het_all[~summary_columns(het_all, table)].reset_index(drop=True)}
    if summaries is not None:
        tables["summaries"] = summaries
    specificity = subnetwork_specificity(design.pairs, table, main, c.hdi_prob)
    if specificity is not None:
        tables["specificity"] = specificity
    # with dataset scales, the drugs' population scales (their datasets' strength and how far
    # a population of datasets may lie from it)
    scale_var = next((v for v in ("drug_scale_population", "drug_scale") if v in post), None)
    scales = post[scale_var].to_numpy() if scale_var else None
    if len(design.drugs) > 1:
        # with dataset scales, the drugs' fitted effects and the factor to their populations' apart
        factor = post["drug_population_factor"].to_numpy() if "drug_population_factor" in post else None
        fitted = drug if factor is None else drug / factor[..., None]
        tables["drug_similarity"] = drug_similarity(design.drugs, fitted[..., is_pair], c.hdi_prob, scales, factor)
    if scales is not None:
        tables["drug_scales"] = scale_table(design.drugs, scales, c.hdi_prob)
    unit_var = next((v for v in ("dataset_scale_population", "dataset_scale") if v in post), None)
    if unit_var:  # with learned scales, each dataset's population of subjects (subject_response.py)
        units = scale_table(list(design.units), post[unit_var].to_numpy(), c.hdi_prob, column="dataset")
        units.insert(1, "drug", [design.drugs[d] for d in design.unit_drug])
        tables["dataset_scales"] = units
    # every outcome fitted counts, the summary outcomes too (split into summaries.tsv above)
    rows = pd.concat([effects, summaries], ignore_index=True) if summaries is not None else effects
    het = het_all
    summarised = {"overall": rows[rows.effect_type == "overall"],
                  "drug_effect": rows[rows.effect_type == "drug"],
                  "dataset_effect": rows[rows.effect_type == "dataset"],
                  "sigma": het[het.parameter == "residual_sd"], "subject_sd": het[het.parameter == "subject_sd"],
                  **{v: het[het.parameter == v] for v in ("tau_drug", "tau_dataset") if v in post},
                  **({scale_var: tables["drug_scales"]} if "drug_scales" in tables else {}),
                  **({unit_var: tables["dataset_scales"]} if "dataset_scales" in tables else {}),
                  **{f"slope:{n}": rows[rows.effect == f"covariate:{n}"] for n in names}}
    # not sampled: functions of the draws (and fresh noise)
    drawn_after = {"drug_population_factor", "dataset_scale_population", "dataset_population_factor"}
    # nutpie also stores the unconstrained twins of bounded variables (``*_log__``, ``*_zerosum__``):
    # the same draws transformed, so they would count every such variable twice
    sampled = [v for v in post.data_vars if not v.endswith(("_z", "__")) and v not in drawn_after
               and v not in summarised]
    diagnostics = sampler_diagnostics(idata, sampled, c.rhat_max, ess_threshold(c), summarised)
    diagnostics["sampling_seconds"] = round(elapsed, 2)
    warnings = []
    if divergences:
        warnings.append(f"pooling: {divergences} divergent transitions; posteriors may be biased")
    hits = int(diagnostics["treedepth_hits"].max()) if len(diagnostics) else 0
    if hits:
        warnings.append(f"pooling: {hits} draws stopped at the maximum tree depth (pooling.max_treedepth="
                        f"{c.max_treedepth}); mixing may be poor: check R-hat and ESS, raise it or tune longer")
    warnings += [w for w in [rhat_warning(diagnostics, c.rhat_max), slope_modes_warning(diagnostics, names),
                             bfmi_warning(diagnostics)] if w]
    warnings += [f"pooling: {n}" for n in design.notes() + notes]
    return PoolingResult(effects=effects, diagnostics=diagnostics, idata=idata,
                         description=bayesian_description(description, effects, tables), warnings=warnings,
                         tables=tables,
                         interval=f"{100 * c.hdi_prob:g}% HDI", sampler_ok=sampler_healthy(diagnostics),
                         adjusted_for=list(dict.fromkeys(n.split(":")[0] for n in names)), columns=DERIVED_COLUMNS)


def slope_modes_warning(diagnostics: pd.DataFrame, names: list[str]) -> str | None:
    """What to do when the chains disagree on a pooled covariate slope's mean or spread across
    pairs: on simulated studies these had two modes that NUTS chains do not cross (5 of 240
    calibration replicates, docs/calibration.md), and "not converged" alone does not say that
    more chains tell which one holds most of them, or how to drop a slope nobody expects."""
    if not len(diagnostics) or "n_r_hat_over" not in diagnostics:
        return None
    bad = set(diagnostics.loc[beyond_chance(diagnostics), "variable"].astype(str))
    stuck = [n for n in names if n in SLOPE_SWITCHES and any(v.startswith(f"{n}_slope_") for v in bad)]
    if not stuck:
        return None
    return (f"pooling: the chains disagree on how the {' and '.join(stuck)} slope"
            f"{'s vary' if len(stuck) > 1 else ' varies'} across network pairs; in simulated studies such "
            "slopes' mean and spread across pairs had two modes that chains do not cross (docs/calibration.md). "
            "pooling.chains=4 shows which mode most chains take; where no such effect is expected, "
            + " or ".join(SLOPE_SWITCHES[n] for n in stuck) + " leaves the slope out")


def heterogeneity_table(design: ScanDesign, post, hdi_prob: float, names: list[str]) -> pd.DataFrame:
    """Per network pair: between-drug and between-dataset sds, each dataset's residual and
    subject sds, and the covariate slopes (posterior summaries)."""
    blocks = []
    for var in ("tau_drug", "tau_dataset"):
        if var in post:
            x = post[var].to_numpy()
            blocks.append((var, "", x if x.ndim == 3 else np.repeat(x[..., None], len(design.pairs), axis=2)))
    for var, label in (("sigma", "residual_sd"), ("subject_sd", "subject_sd")):
        x = post[var].to_numpy()
        blocks += [(label, ds, x[:, :, k]) for k, ds in enumerate(design.datasets)]
    blocks += [(f"slope:{n}", SLOPE_UNITS[n.split(":")[0]], post[f"slope:{n}"].to_numpy()) for n in names]
    n_pairs = len(design.pairs)
    sds = np.repeat([not name.startswith("slope:") for name, _, _ in blocks], n_pairs)  # bounded below by 0
    s = summarise_draws(np.concatenate([b for _, _, b in blocks], axis=-1), hdi_prob=hdi_prob, hdi50=False,
                        lower_bound=np.where(sds, 0.0, -np.inf))
    s.loc[sds, "pd"] = np.nan  # an sd has no sign: its pd is 1 by construction
    s.insert(0, "level", np.repeat([lv for _, lv, _ in blocks], n_pairs))
    s.insert(0, "parameter", np.repeat([name for name, _, _ in blocks], n_pairs))
    s.insert(0, "network_b", np.tile(design.pairs["network_b"].to_numpy(), len(blocks)))
    s.insert(0, "network_a", np.tile(design.pairs["network_a"].to_numpy(), len(blocks)))
    return s
