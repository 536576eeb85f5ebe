"""What the hierarchical pooling models share: the paired design, priors and effect rows.

Both ``pymc`` and ``bambi`` fit, for every network pair p and drug scan i of subject s in
dataset k given drug d,

    y[i, p] = FC(drug scan) - FC(subject's control scans)
    y[i, p] ~ Normal(theta[k, p], sigma[p])
    theta[k, p] = beta[d, p] + tau_dataset[p] * z_dataset[k, p]     (dataset around its drug)
    beta[d, p]  = mu[p] + tau_drug[p] * z_drug[d, p]                (drug around the overall)
    mu[p] ~ Normal(0, effect_sd); tau_* ~ HalfNormal(*_sd); sigma[p] ~ HalfNormal(sigma_sd)

Differencing within subject removes subject and dataset intercepts exactly (crossover and
pre/post designs alike), which is what makes one joint model over all pairs fast; with the
normal likelihood ``pymc`` also integrates mu, beta and theta out (:mod:`.marginal`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from megafc.core import Choice, ConfigError, InputError, paired_differences
from megafc.stats import flag_ok, summarise_draws


class Sampler(Choice):
    """pooling.sampler: a NUTS implementation (auto: the fastest installed for the model)."""

    auto = "auto"
    pymc = "pymc"
    nutpie = "nutpie"
    numpyro = "numpyro"
    blackjax = "blackjax"


class Heterogeneity(Choice):
    """pooling.heterogeneity of the scan-level model: how each pair's between-drug and
    between-dataset sds relate across pairs."""

    learned = "learned"
    pooled = "pooled"
    per_pair = "per_pair"
    shared = "shared"


class PairedHeterogeneity(Choice):
    """pooling.heterogeneity of the paired and edge models: one sd per pair, or one for all."""

    per_pair = "per_pair"
    shared = "shared"


class Parametrization(Choice):
    """pooling.parametrization: how the effects enter NUTS."""

    marginal = "marginal"
    non_centered = "non_centered"
    centered = "centered"


class Likelihood(Choice):
    """pooling.likelihood: of each observed FC difference."""

    normal = "normal"
    student_t = "student_t"


class LogLikelihood(Choice):
    """pooling.log_likelihood: the pointwise log-likelihood's unit in posterior.nc."""

    subject_pair = "subject_pair"
    subject = "subject"
    none = "none"


@dataclass
class HierarchicalPriors:
    #: sd of the Normal prior on the overall effect (Fisher z).
    effect_sd: float = 0.2
    #: scale of the HalfNormal prior on between-drug sd.
    drug_sd: float = 0.1
    #: scale of the HalfNormal prior on between-dataset sd (within drug).
    dataset_sd: float = 0.1
    #: scale of the HalfNormal prior on the residual sd of paired differences.
    sigma_sd: float = 0.2


@dataclass
class NUTSConfig:
    """Sampling and reporting settings shared by every Bayesian pooling model."""

    #: Draws kept per chain.
    draws: int = 1500
    #: Tuning (warm-up) steps per chain, discarded.
    tune: int = 1500
    #: Independent chains (R-hat needs at least 2).
    chains: int = 2
    #: Chains run in parallel processes when > 1.
    cores: int = 1
    #: 0.95 avoids the divergences the between-drug sd funnel of the sampled
    #: parametrisations (and bambi) gives at 0.9.
    target_accept: float = 0.95
    #: NUTS doubles its trajectory at most this many times (2^depth leapfrog steps). Lower it
    #: only for quick looks: draws that hit it are counted in diagnostics.tsv and warned about.
    max_treedepth: int = 10
    #: Probability mass of the reported highest-density intervals (hdi_low, hdi_high).
    hdi_prob: float = 0.95
    #: An effect is flagged (ok = false) above this R-hat or below ess_min bulk/tail ESS.
    rhat_max: float = 1.01
    #: Smallest acceptable bulk/tail ESS (null: 100 per chain, as Vehtari et al. 2021 recommend).
    ess_min: Optional[float] = None
    #: Show the sampler's progress bar on the terminal (megafc.log gets progress lines anyway).
    progressbar: bool = True
    #: NUTS implementation: auto (the fastest installed for this model), pymc, nutpie,
    #: numpyro or blackjax.
    sampler: Sampler = Sampler.auto
    #: Half-width of the region of practical equivalence around 0 (Fisher z); effects.tsv
    #: reports p_rope, the posterior probability inside it. 0.02 is |delta r| of about 0.02.
    rope: float = 0.02
    priors: HierarchicalPriors = field(default_factory=HierarchicalPriors)


@dataclass
class SamplerConfig(NUTSConfig):
    """Settings of the network-pair models (``pymc``, ``bambi``)."""

    #: Drug contrasts to report as "a-b" (e.g. psilocybin-LSD); empty: every pair of drugs.
    contrasts: list[str] = field(default_factory=list)
    #: Pointwise log-likelihood in posterior.nc for az.loo / az.compare:
    #: per subject and network pair (subject_pair), per subject (subject) or none.
    log_likelihood: LogLikelihood = LogLikelihood.subject_pair
    #: Draws kept in the log_likelihood group (evenly spaced), to bound posterior.nc's size.
    log_likelihood_draws: int = 500


def ess_threshold(c: NUTSConfig) -> float:
    return float(c.ess_min) if c.ess_min is not None else 100.0 * c.chains


SAMPLERS = tuple(m.value for m in Sampler)


#: The distributions a PyMC pooling model relies on (the NUTS samplers only where installed).
PYMC_PACKAGES: tuple[str, ...] = ("pymc", "pytensor", "nutpie", "numba", "numpyro", "jax", "blackjax")

#: What every Bayesian pooling model cites: PyMC, ArviZ (summaries) and the rank-normalised R-hat.
BAYESIAN_REFERENCES: tuple[str, ...] = (
    "Abril-Pla O, Andreani V, Carroll C, Dong L, Fonnesbeck CJ, Kochurov M, Kumar R, Lao J, Luhmann CC, "
    "Martin OA, Osthege M, Vieira R, Wiecki T, Zinkov R (2023) PyMC: a modern, and comprehensive probabilistic "
    "programming framework in Python. PeerJ Comput Sci 9:e1516",
    "Kumar R, Carroll C, Hartikainen A, Martin O (2019) ArviZ a unified library for exploratory analysis of "
    "Bayesian models in Python. J Open Source Softw 4:1143",
    "Vehtari A, Gelman A, Simpson D, Carpenter B, Buerkner PC (2021) Rank-normalization, folding, and "
    "localization: an improved R-hat for assessing convergence of MCMC. Bayesian Anal 16:667-718",
)

#: The NUTS implementations other than PyMC's own, cited when a run uses them.
SAMPLER_REFERENCES: dict[str, str] = {
    "nutpie": "nutpie: a NUTS sampler for PyMC models (software, PyMC developers).",
    "numpyro": ("Phan D, Pradhan N, Jankowiak M (2019) Composable effects for flexible and accelerated "
                "probabilistic programming in NumPyro. arXiv 1912.11554"),
    "blackjax": "BlackJAX: composable Bayesian inference in JAX (software, BlackJAX developers).",
}


def bayesian_references(c: NUTSConfig, auto: str) -> list[str]:
    """What a Bayesian pooling model with this sampler config cites."""
    sampler = resolve_sampler(c, auto)
    return [*BAYESIAN_REFERENCES, *([SAMPLER_REFERENCES[sampler]] if sampler in SAMPLER_REFERENCES else [])]


def resolve_sampler(c: NUTSConfig, auto: str) -> str:
    """The sampler to use; ``auto`` becomes ``auto`` if its package is installed, else pymc."""
    if c.sampler != "auto":
        return str(c.sampler)
    return auto if importlib.util.find_spec(auto) is not None else "pymc"


#: Each NUTS implementation's name for the maximum tree depth (pm.sample passes it through).
MAX_DEPTH_KEYWORD = {"nutpie": "maxdepth", "numpyro": "max_tree_depth"}


def nuts_kwargs(c: NUTSConfig, sampler: str) -> dict:
    """``pm.sample`` keyword arguments for target_accept and max_treedepth in every sampler."""
    if sampler == "pymc":
        return {"nuts": {"target_accept": c.target_accept, "max_treedepth": c.max_treedepth}}
    extra = {MAX_DEPTH_KEYWORD[sampler]: c.max_treedepth} if sampler in MAX_DEPTH_KEYWORD else {}
    return {"target_accept": c.target_accept, "nuts_sampler": sampler, "nuts_sampler_kwargs": extra}


def chain_processes() -> dict:
    """How PyMC's own sampler starts its chain processes: forked on Linux, as in a plain run.
    Inside a joblib (loky) sweep worker the default start method is not fork, and PyMC then
    pickles the compiled model, which fails ("cannot pickle 'mmap.mmap' object")."""
    import multiprocessing
    import sys

    fork = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
    return {"mp_ctx": "fork"} if fork else {}


def sample(model, c: NUTSConfig, sampler: str, seed: int, var_names: list[str] | None = None):
    """``pm.sample`` with the run's NUTS settings and progress lines in megafc.log.

    A line says what is sampled and how, the heartbeat says every 10 s how long it has run (and,
    with PyMC's own sampler, how many draws are done and the time left), and a last line gives
    the time taken and the divergences. Inside a run the pipeline's heartbeat is reused.
    ``var_names``: the variables to keep (default: all).
    """
    import contextlib
    import time

    import pymc as pm

    from megafc.core import progress
    from megafc.core.processes import children_die_with_parent

    total = c.chains * (c.tune + c.draws)
    what = (f"pooling: compiling the model and sampling {c.chains} chains x ({c.tune} tune + {c.draws} draws) "
            f"with {sampler}")
    own = contextlib.nullcontext() if progress.running() else progress.Heartbeat("pooling")
    start = time.perf_counter()
    with own:
        progress.log.info("%s ...", what)
        beat = progress.stage("pooling: sampling", total if sampler == "pymc" else None, announce=False)
        extra = {"callback": lambda trace, draw: beat.advance()} if sampler == "pymc" and beat else {}
        with model, children_die_with_parent():  # no orphaned chains if megafc is killed
            if sampler == "nutpie":
                idata = sample_nutpie(model, c, seed, var_names)
            else:
                idata = pm.sample(
                    draws=c.draws, tune=c.tune, chains=c.chains, cores=min(c.cores, c.chains),
                    random_seed=seed, progressbar=c.progressbar, compute_convergence_checks=False,
                    var_names=var_names, **nuts_kwargs(c, sampler), **extra, **chain_processes(),
                )
        div = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0
        progress.log.info("pooling: sampled in %.0f s, %d divergent transitions", time.perf_counter() - start, div)
        progress.stage("pooling: summarising the posterior")
    return idata


def sample_nutpie(model, c: NUTSConfig, seed: int, var_names: list[str] | None = None):
    """What ``pm.sample(nuts_sampler="nutpie")`` does (same seed, and PyMC's constant_data and
    observed_data groups; not its timing attributes), with the compiled model reused when an
    earlier fit in this process had the same model with other data (:mod:`.compiled_models`)."""
    import nutpie
    import pymc as pm
    from arviz import dict_to_dataset
    from pymc.backends.arviz import coords_and_dims_for_inferencedata, find_constants, find_observations

    from .compiled_models import compiled_model

    idata = nutpie.sample(
        compiled_model(model, var_names), draws=c.draws, tune=c.tune, chains=c.chains, target_accept=c.target_accept,
        maxdepth=c.max_treedepth, seed=seed, progress_bar=c.progressbar,
    )
    coords, dims = coords_and_dims_for_inferencedata(model)
    idata.add_groups({group: dict_to_dataset(found(model), library=pm, coords=coords, dims=dims, default_dims=[])
                      for group, found in (("constant_data", find_constants), ("observed_data", find_observations))},
                     coords=coords, dims=dims)
    return idata


def validate_sampler_config(c: NUTSConfig) -> None:
    if c.sampler != "auto" and importlib.util.find_spec(c.sampler) is None:
        raise ConfigError(
            f"config key 'pooling.sampler' is '{c.sampler}' but the package '{c.sampler}' is not "
            f"installed (pip install {c.sampler}, or use pooling.sampler=pymc)"
        )
    for key in ("draws", "tune", "chains", "cores"):
        if getattr(c, key) < (1 if key != "tune" else 0):
            raise ConfigError(f"config key 'pooling.{key}' is {getattr(c, key)}; expected a positive integer")
    if not 0 < c.target_accept < 1:
        raise ConfigError(f"config key 'pooling.target_accept' is {c.target_accept}; expected in (0, 1)")
    if not 0 < c.hdi_prob < 1:
        raise ConfigError(f"config key 'pooling.hdi_prob' is {c.hdi_prob}; expected in (0, 1)")
    if not 1 <= c.max_treedepth <= 15:
        raise ConfigError(f"config key 'pooling.max_treedepth' is {c.max_treedepth}; expected an integer in [1, 15]")
    if c.max_treedepth != 10 and c.sampler == "blackjax":
        raise ConfigError("config key 'pooling.max_treedepth' cannot be passed to the blackjax sampler; "
                          "use pooling.sampler=nutpie, pymc or numpyro")
    if c.rope < 0:
        raise ConfigError(f"config key 'pooling.rope' is {c.rope}; expected >= 0")
    if getattr(c, "log_likelihood_draws", 1) < 1:
        raise ConfigError(f"config key 'pooling.log_likelihood_draws' is {c.log_likelihood_draws}; expected >= 1")
    if not c.rhat_max >= 1:
        raise ConfigError(f"config key 'pooling.rhat_max' is {c.rhat_max}; expected >= 1")
    if c.ess_min is not None and not c.ess_min > 0:
        raise ConfigError(f"config key 'pooling.ess_min' is {c.ess_min}; expected a positive number or null")
    for key, value in vars(c.priors).items():
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
            raise ConfigError(f"config key 'pooling.priors.{key}' is {value}; expected a positive number")


class PoolingLevels:
    """Which levels of the hierarchy the data support, for anything with ``drugs`` and ``units``."""

    drugs: list[str]
    units: list[str]

    @property
    def use_drug_level(self) -> bool:
        return len(self.drugs) > 1

    @property
    def use_dataset_level(self) -> bool:
        return len(self.units) > len(self.drugs)

    def notes(self) -> list[str]:
        out = []
        if not self.use_drug_level:
            out.append("only one drug: the drug level is omitted (each drug effect equals the overall effect)")
        if not self.use_dataset_level:
            out.append(
                "no drug has more than one dataset: the between-dataset level is omitted "
                "(dataset effects equal their drug's effect)"
            )
        return out


@dataclass
class PairedDesign(PoolingLevels):
    """Paired differences in wide form (observations x network pairs) with their grouping."""

    y: np.ndarray
    pairs: pd.DataFrame  # network_a, network_b, system_a, system_b (column order of y)
    obs: pd.DataFrame  # one row per drug scan: scan_id, dataset, subject, drug, unit
    drugs: list[str]
    units: list[str]  # dataset units (dataset, or dataset[drug] when a dataset has several drugs)
    drug_idx: np.ndarray
    unit_idx: np.ndarray
    unit_drug: np.ndarray  # drug index of each unit

    def n_obs(self, etype: str, level: str) -> int:
        """Drug scans (paired differences) informing an effect."""
        if etype == "drug":
            return int((self.obs["drug"] == level).sum())
        if etype == "dataset":
            return int((self.unit_idx == self.units.index(level)).sum())
        if etype == "contrast":
            a, b = level.split("-", 1)
            return int(self.obs["drug"].isin([a, b]).sum())
        return len(self.obs)


def paired_design(pairs: pd.DataFrame) -> PairedDesign:
    diffs = paired_differences(pairs)
    if diffs.empty:
        raise InputError("pooling: no drug scan has a control scan; nothing to compare")
    n_drugs_per_ds = diffs.groupby("dataset")["drug"].nunique()
    multi = set(n_drugs_per_ds.index[n_drugs_per_ds > 1])
    diffs["unit"] = [f"{ds}[{d}]" if ds in multi else ds for ds, d in zip(diffs["dataset"], diffs["drug"])]
    wide = diffs.pivot_table(index="scan_id", columns=["network_a", "network_b"], values="fc_diff", sort=False)
    obs = diffs.drop_duplicates("scan_id").set_index("scan_id").loc[wide.index].reset_index()
    pair_meta = diffs.drop_duplicates(["network_a", "network_b"]).set_index(["network_a", "network_b"])
    pair_meta = pair_meta.loc[wide.columns, ["system_a", "system_b"]].reset_index()
    pair_meta.attrs = {"level": pairs.attrs.get("level", "network")}  # what the outcomes are pairs of
    drugs = sorted(obs["drug"].unique())
    units = list(dict.fromkeys(obs.sort_values(["drug", "unit"])["unit"]))
    unit_drug = obs.drop_duplicates("unit").set_index("unit").loc[units, "drug"]
    return PairedDesign(
        y=wide.to_numpy(dtype=float),
        pairs=pair_meta,
        obs=obs[["scan_id", "dataset", "subject", "drug", "dose", "unit", "fd_diff",
                 *(["order_diff"] if "order_diff" in obs.columns else [])]],
        drugs=drugs,
        units=units,
        drug_idx=np.array([drugs.index(d) for d in obs["drug"]]),
        unit_idx=np.array([units.index(u) for u in obs["unit"]]),
        unit_drug=np.array([drugs.index(d) for d in unit_drug]),
    )


def effects_table(
    design: PoolingLevels,
    blocks: list[tuple[str, str, str, np.ndarray]],
    divergences: int,
    config: SamplerConfig,
) -> pd.DataFrame:
    """One row per network pair and effect from posterior draws.

    ``blocks``: (effect, effect_type, level, draws of shape (chain, draw, pair)).
    """
    n_pairs = len(design.pairs)
    stacked = np.concatenate([draws for _, _, _, draws in blocks], axis=-1)  # one vectorised summary
    eff = summarise_draws(stacked, hdi_prob=config.hdi_prob)
    flat = stacked.reshape(-1, stacked.shape[-1])
    eff["p_rope"] = (np.abs(flat) <= config.rope).mean(axis=0) if config.rope else np.nan
    slopes = np.repeat([etype == "covariate" for _, etype, _, _ in blocks], n_pairs)
    eff.loc[slopes, "p_rope"] = np.nan  # the rope is on the FC scale, a slope is not
    del stacked, flat
    eff.insert(0, "level", np.repeat([level for _, _, level, _ in blocks], n_pairs))
    eff.insert(0, "effect_type", np.repeat([etype for _, etype, _, _ in blocks], n_pairs))
    eff.insert(0, "effect", np.repeat([effect for effect, _, _, _ in blocks], n_pairs))
    eff.insert(0, "network_b", np.tile(design.pairs["network_b"].to_numpy(), len(blocks)))
    eff.insert(0, "network_a", np.tile(design.pairs["network_a"].to_numpy(), len(blocks)))
    systems = design.pairs.set_index(["network_a", "network_b"])
    keys = list(zip(eff["network_a"], eff["network_b"]))
    eff.insert(2, "system_a", systems.loc[keys, "system_a"].to_numpy())
    eff.insert(3, "system_b", systems.loc[keys, "system_b"].to_numpy())
    eff["divergences"] = int(divergences)
    eff["ok"] = flag_ok(eff, config.rhat_max, ess_threshold(config))
    counts = {key: design.n_obs(*key) for key in dict.fromkeys(zip(eff["effect_type"], eff["level"]))}
    eff["n_obs"] = [counts[key] for key in zip(eff["effect_type"], eff["level"])]
    return eff


def outcomes_text(pairs_meta: pd.DataFrame) -> str:
    """"120 network pairs and 21 summary outcomes": the outcome columns a model fitted, told apart
    (a summary's pseudo pair has no network_b), so that methods do not count summaries as pairs;
    "325 subnetwork pairs" at that level (the pair table's ``attrs``)."""
    n_summaries = int((pairs_meta["network_b"] == "").sum())
    text = f"{len(pairs_meta) - n_summaries} {pairs_meta.attrs.get('level', 'network')} pairs"
    return text + (f" and {n_summaries} summary outcomes" if n_summaries else "")


def describe(design: PairedDesign, model: str, config: SamplerConfig, sampler: str) -> str:
    p = config.priors
    return (
        f"{model}: hierarchical model of within-subject drug-minus-control FC differences "
        f"({len(design.obs)} drug-minus-control differences, {outcomes_text(design.pairs)}, {len(design.units)} datasets, "
        f"{len(design.drugs)} drugs), overall effect with drug effects partially pooled around it and "
        f"dataset effects partially pooled around their drug; priors: "
        f"overall ~ Normal(0, {p.effect_sd}), between-drug sd ~ HalfNormal({p.drug_sd}), "
        f"between-dataset sd ~ HalfNormal({p.dataset_sd}), residual sd ~ HalfNormal({p.sigma_sd}). "
        f"NUTS ({sampler} sampler): {config.chains} chains x {config.draws} draws after {config.tune} tuning steps, "
        f"target_accept {config.target_accept}; {100 * config.hdi_prob:g}% HDIs; effects flagged "
        f"when R-hat > {config.rhat_max}, ESS < {ess_threshold(config):.0f} or any divergence."
        + ("" if not design.notes() else " Note: " + "; ".join(design.notes()) + ".")
    )
