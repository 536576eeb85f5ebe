"""The ``synthetic`` dataset: a simulated multi-site psychedelic fMRI study with known truth.

It mirrors the design of Girn et al. (Nature Medicine 2026): 11 datasets over 5 drugs
(~267 subjects, ~519 usable scans), within-subject drug/placebo crossovers and one fixed-order
baseline -> drug dataset (ayahuasca). Stress tests switch sites to parallel-group or mixed
designs, give subjects several drug scans, make sites noisier or change the motion confound
(drug scans move more) from the command line. Region timeseries come from a latent-factor model on the
atlas's subnetworks, in which the drug raises transmodal (Default, Cont, Limbic) <-> unimodal
(Vis, SomMot) coupling, alters thalamus/caudate/putamen/cerebellum <-> SomMot coupling and
weakly lowers within-Vis and within-SomMot coupling, with drug, dataset and subject
heterogeneity, AR(1) autocorrelation and motion. The planted network-pair effects (per
dataset, per drug and overall) are the expected drug-minus-control FC over each dataset's (or
drug's) population of subjects and sessions, computed by Monte Carlo without time-series noise,
and returned as ``truth`` so recovery can be checked.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from megafc.core import (
    Choice,
    AGGREGATION_LEVELS,
    Atlas,
    ConfigError,
    Connectomes,
    DatasetInputs,
    DatasetLoader,
    network_pair_table,
)
from megafc.core import fingerprint_value

from .synthetic_confounds import CONFOUNDS_VERSION

TRANSMODAL = ("Default", "Cont", "Limbic")
UNIMODAL = ("Vis", "SomMot")


class Design(Choice):
    """A site's study design."""

    crossover = "crossover"
    prepost = "prepost"
    parallel = "parallel"


#: dataset.design: every site's design, or ``mixed`` (the designs in turn over the sites).
DesignOverride = Choice("DesignOverride", [*((m.value, m.value) for m in Design), ("mixed", "mixed")])


#: Study designs the simulator can produce.
DESIGNS = tuple(m.value for m in Design)


@dataclass
class SiteSpec:
    name: str
    drug: str
    n_subjects: int
    #: ``crossover`` (drug + placebo, counterbalanced), ``prepost`` (baseline, then drug) or
    #: ``parallel`` (each subject either drug or placebo, alternating).
    design: Design = Design.crossover
    dose: float | None = None
    #: Drug scans per drug subject (prepost: at 60, 120, ... minutes after dosing).
    drug_scans: int = 1
    #: Multiplies the sd of this site's scan-level FC noise: its scans are n_volumes / noise^2
    #: long (at least 20) and its session-to-session variation noise x larger.
    noise: float = 1.0


def _default_sites() -> list[SiteSpec]:
    return [
        SiteSpec("psilocybin_1", "psilocybin", 15, dose=2.0),
        SiteSpec("psilocybin_2", "psilocybin", 24, dose=25.0),
        SiteSpec("psilocybin_3", "psilocybin", 30, dose=25.0),
        SiteSpec("psilocybin_4", "psilocybin", 28, dose=0.2),
        SiteSpec("lsd_1", "LSD", 20, dose=0.075),
        SiteSpec("lsd_2", "LSD", 24, dose=0.1),
        SiteSpec("lsd_3", "LSD", 30, dose=0.1),
        SiteSpec("mescaline_1", "mescaline", 28, dose=500.0),
        SiteSpec("dmt_1", "DMT", 14, dose=20.0),
        SiteSpec("dmt_2", "DMT", 24, dose=20.0),
        SiteSpec("ayahuasca_1", "ayahuasca", 30, design="prepost", dose=None),
    ]


#: Each drug's effect relative to the overall pattern (psilocybin close to LSD).
DEFAULT_DRUG_SCALE = {"psilocybin": 1.0, "LSD": 1.1, "mescaline": 0.8, "DMT": 1.25, "ayahuasca": 0.7}


@dataclass
class EffectSpec:
    """Planted drug effects, in Fisher z of the latent (subnetwork) correlations."""

    #: transmodal <-> unimodal coupling increase
    transmodal_unimodal: float = 0.25
    #: thalamus <-> SomMot and thalamus <-> Vis increase
    thalamus_sensory: float = 0.2
    #: caudate/putamen <-> SomMot decrease, cerebellum <-> SomMot decrease
    striatum_sommot: float = -0.2
    cerebellum_sommot: float = -0.15
    #: within-Vis / within-SomMot decrease, as a drop in regions' loading on their network
    within_sensory_loading: float = -0.04
    #: sd of drug-specific deviations (on effect pairs only), and extra for non-psilocybin/LSD
    drug_deviation_sd: float = 0.04
    #: sd of dataset-specific deviations of a dataset's effect from its drug's (on effect pairs
    #: only, mean 0 in a drug's population of datasets): heterogeneity between datasets that differs from
    #: pair to pair, which models sharing one between-dataset sd across pairs must not miss.
    dataset_deviation_sd: float = 0.0
    #: sd of dataset multipliers around 1, and of subject multipliers around 1
    dataset_scale_sd: float = 0.15
    subject_scale_sd: float = 0.3


class SyntheticDataset(DatasetLoader):
    """Simulated 11-dataset, 5-drug psychedelic resting-state study with known effects."""

    name = "synthetic"

    @dataclass
    class Config:
        sites: list[SiteSpec] = field(default_factory=_default_sites)
        #: Multiplies every site's n_subjects (e.g. 0.2 for a quick test).
        scale: float = 1.0
        #: Volumes per scan (TR 2 s).
        n_volumes: int = 200
        #: Fraction of subjects missing one of their scans (paired models exclude the rest, with reason).
        missing_scan_fraction: float = 0.056
        #: AR(1) coefficient of the latent and regional signals.
        ar1: float = 0.3
        #: Loading of regions on their subnetwork's latent signal (sets within-network FC).
        loading: float = 0.7
        #: Global signal variance added per mm of mean framewise displacement.
        motion_coupling: float = 0.1
        #: Drug scans move more: their mean FD is (1 + motion_confound) x the subject's usual.
        motion_confound: float = 0.25
        #: sd of each scan's session-to-session variation of latent FC (Fisher z).
        session_sd: float = 0.02
        #: Write fMRIPrep-style confounds files (motion, global/WM/CSF signals, aCompCor, FD,
        #: cosines) that carry the simulated motion artifact, and hand the raw timeseries with them
        #: to the denoiser: denoising strategies (denoiser=simple,simple_gsr,scrubbing,compcor)
        #: then act on synthetic data as on fMRIPrep's.
        confounds: bool = False
        #: Where those files go (one folder per simulation, reused when it is complete).
        confounds_dir: str = "~/.cache/megafc/synthetic_confounds"
        #: sd of each site's additive offset of latent FC (Fisher z, per subnetwork pair), shared by
        #: all its scans: scanner and protocol differences. Raise it (e.g. 0.3) to stress site
        #: correction (harmonizer=combat against the model's own site terms).
        site_offset_sd: float = 0.05
        #: Overrides of every site's design, drug scans per subject and noise, for stress tests
        #: from the command line (e.g. dataset.design=parallel, dataset.site_noise={lsd_2: 3}).
        #: ``mixed`` gives the sites crossover, prepost (2 drug scans), parallel and crossover
        #: (2 drug scans) designs in turn.
        design: Optional[DesignOverride] = None
        drug_scans: Optional[int] = None
        site_noise: dict[str, float] = field(default_factory=dict)
        #: Student-t degrees of freedom of subjects' and sessions' FC deviations (null: normal),
        #: same sd: heavy-tailed data for a model that assumes Gaussian residuals.
        noise_df: Optional[float] = None
        #: Fraction of subjects with one outlying scan: every latent pair shifted by
        #: Normal(0, outlier_sd) (an artifact-ridden session that slipped past QC).
        outlier_fraction: float = 0.0
        outlier_sd: float = 0.3
        #: sd of one offset per scan and one per dataset added to every latent pair (global FC
        #: shifts: arousal, scanner drift), so that network pairs are correlated across scans.
        scan_offset_sd: float = 0.0
        dataset_offset_sd: float = 0.0
        #: Added to every latent pair per session after the first (habituation): confounded with
        #: the drug in pre/post designs, balanced out in counterbalanced crossovers.
        order_effect: float = 0.0
        effects: EffectSpec = field(default_factory=EffectSpec)
        drug_scale: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DRUG_SCALE))

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        if c.scale <= 0:
            raise ConfigError(f"config key 'dataset.scale' is {c.scale}; expected > 0")
        if c.n_volumes < 20:
            raise ConfigError(f"config key 'dataset.n_volumes' is {c.n_volumes}; expected >= 20")
        if not 0 <= c.missing_scan_fraction < 1:
            raise ConfigError("config key 'dataset.missing_scan_fraction' must be in [0, 1)")
        if not 0 < c.loading < 1:
            raise ConfigError(f"config key 'dataset.loading' is {c.loading}; expected in (0, 1)")
        if c.drug_scans is not None and c.drug_scans < 1:
            raise ConfigError(f"config key 'dataset.drug_scans' is {c.drug_scans}; expected >= 1")
        if c.motion_confound <= -1:
            raise ConfigError(f"config key 'dataset.motion_confound' is {c.motion_confound}; expected > -1")
        for key in ("site_offset_sd", "outlier_sd", "scan_offset_sd", "dataset_offset_sd"):
            if getattr(c, key) < 0:
                raise ConfigError(f"config key 'dataset.{key}' is {getattr(c, key)}; expected >= 0")
        if c.noise_df is not None and not c.noise_df > 2:
            raise ConfigError(f"config key 'dataset.noise_df' is {c.noise_df}; expected > 2 (a finite variance) "
                              "or null (normal)")
        if not 0 <= c.outlier_fraction < 1:
            raise ConfigError(f"config key 'dataset.outlier_fraction' is {c.outlier_fraction}; expected in [0, 1)")
        unknown = sorted(set(c.site_noise) - {s.name for s in c.sites})
        if unknown:
            raise ConfigError(f"config key 'dataset.site_noise' names unknown site(s) {unknown}; "
                              f"sites: {[s.name for s in c.sites]}")
        for i, s in enumerate(c.sites):
            if s.drug_scans < 1:
                raise ConfigError(f"config key 'dataset.sites[{i}].drug_scans' is {s.drug_scans}; expected >= 1")
            if not s.noise > 0:
                raise ConfigError(f"config key 'dataset.sites[{i}].noise' is {s.noise}; expected > 0")
            if s.drug not in c.drug_scale:
                raise ConfigError(
                    f"config key 'dataset.sites[{i}].drug' is '{s.drug}', which has no entry in "
                    f"'dataset.drug_scale' {sorted(c.drug_scale)}"
                )

    def site_specs(self) -> list[SiteSpec]:
        """The sites with the command-line overrides applied."""
        c = self.config
        mixed = [("crossover", 1), ("prepost", 2), ("parallel", 1), ("crossover", 2)]
        out = []
        for i, site in enumerate(c.sites):
            design, k = (mixed[i % len(mixed)] if c.design == "mixed" else
                         (c.design or site.design, site.drug_scans))
            out.append(replace(site, design=design, drug_scans=c.drug_scans or k,
                               noise=site.noise * c.site_noise.get(site.name, 1.0)))
        return out

    # -- the generative model ------------------------------------------------------------

    def _structure(self, atlas: Atlas, rng: np.random.Generator):
        """Baseline latent correlations and the planted effect, in Fisher z (groups x groups)."""
        groups = atlas.groups("subnetwork")
        reg = atlas.regions.drop_duplicates("subnetwork").set_index("subnetwork")
        net = np.array([reg.loc[g, "network"] for g in groups], dtype=object)
        sysc = np.array([reg.loc[g, "system"] for g in groups], dtype=object)
        k = len(groups)
        base = np.where(net[:, None] == net[None, :], 0.6, np.where(sysc[:, None] == sysc[None, :], 0.3, 0.1))
        noise = rng.normal(0, 0.08, (k, k))
        base = base + (noise + noise.T) / 2
        trans = np.isin(net, TRANSMODAL)
        uni = np.isin(net, UNIMODAL)
        base[np.outer(trans, uni) | np.outer(uni, trans)] = 0.0
        np.fill_diagonal(base, 0.0)

        e = self.config.effects
        effect = np.zeros((k, k))
        # subnetwork specificity: each transmodal subnetwork's increase has its own strength
        sub_strength = rng.uniform(0.4, 1.4, k)
        tu = np.outer(trans, uni) | np.outer(uni, trans)
        strength = np.where(trans, sub_strength, 1.0)
        effect[tu] = (e.transmodal_unimodal * np.outer(strength, strength))[tu]
        sommot = net == "SomMot"
        for name, value, partners in (
            ("Thalamus", e.thalamus_sensory, sommot | (net == "Vis")),
            ("Caudate", e.striatum_sommot, sommot),
            ("Putamen", e.striatum_sommot, sommot),
            ("Cerebellum", e.cerebellum_sommot, sommot),
        ):
            here = net == name
            effect[np.outer(here, partners) | np.outer(partners, here)] = value
        loading_change = np.where(uni, e.within_sensory_loading, 0.0)
        return groups, base, effect, loading_change

    @staticmethod
    def _latent_corr(z: np.ndarray) -> np.ndarray:
        """tanh of z (..., k, k) with unit diagonal, projected to the nearest valid correlation
        matrix where it is not one."""
        if z.ndim == 2:
            return SyntheticDataset._latent_corr(z[None])[0]
        r = np.tanh(z)
        idx = np.arange(r.shape[-1])
        r[..., idx, idx] = 1.0
        w, v = np.linalg.eigh(r)
        bad = w.min(axis=-1) < 1e-3
        if bad.any():
            fixed = (v[bad] * np.maximum(w[bad], 1e-3)[..., None, :]) @ np.swapaxes(v[bad], -1, -2)
            d = np.sqrt(fixed[..., idx, idx])
            r[bad] = fixed / (d[..., :, None] * d[..., None, :])
        return r

    def load(self, atlas: Atlas, seed: int) -> DatasetInputs:
        c = self.config
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1847]))
        groups, base, effect, loading_change = self._structure(atlas, rng)
        k = len(groups)
        gidx = {g: i for i, g in enumerate(groups)}
        member = np.array([gidx[g] for g in atlas.regions["subnetwork"]])
        base_load = np.full(k, c.loading)
        effect_mask = effect != 0

        drugs = sorted({s.drug for s in c.sites})
        drug_dev = {}
        shared = rng.normal(0, c.effects.drug_deviation_sd, (k, k))
        for d in drugs:
            own = rng.normal(0, c.effects.drug_deviation_sd, (k, k))
            # psilocybin and LSD share most of their deviation: their maps are close
            dev = shared + 0.3 * own if d in ("psilocybin", "LSD") else own
            drug_dev[d] = np.where(effect_mask, (dev + dev.T) / 2, 0.0)

        def drug_effect(d: str) -> np.ndarray:
            return c.drug_scale[d] * effect + drug_dev[d]

        rows, series, artifacts = [], {}, {}
        population = Population(base, base_load, loading_change, drug_effect, effect_mask)
        datasets = {}
        for site in self.site_specs():
            ds_scale = 1 + rng.normal(0, c.effects.dataset_scale_sd)
            ds_shift = self._site_offset(rng, k)
            ds_dev = self._dataset_deviation(rng, effect_mask)
            ds_eff = ds_scale * drug_effect(site.drug) + ds_dev
            datasets[site.name] = (site.drug, ds_scale, ds_shift, site.noise, ds_dev)
            n_sub = max(2, int(round(site.n_subjects * c.scale)))
            fd_base = rng.lognormal(np.log(0.12), 0.2)
            control = "baseline" if site.design == "prepost" else "placebo"
            n_vol = max(20, int(round(c.n_volumes / site.noise ** 2)))
            for s in range(n_sub):
                subject = f"{s + 1:02d}"
                sub_scale = 1 + rng.normal(0, c.effects.subject_scale_sd)
                sub_shift = self._deviation(rng, 0.05, k)
                sub_fd = fd_base * rng.lognormal(0, 0.35)
                if site.design == "parallel":
                    conds = ["drug"] * site.drug_scans if s % 2 == 0 else [control]
                else:
                    conds = [control] + ["drug"] * site.drug_scans
                order = [str(i + 1) for i in range(len(conds))]
                if site.design == "crossover" and rng.random() < 0.5:  # counterbalanced: drug session(s) first
                    order = order[1:] + order[:1]
                minutes = [np.nan] + [60.0 * (i + 1) for i in range(site.drug_scans)] if site.design == "prepost" \
                    else [np.nan] * len(conds)
                if len(conds) > 1 and rng.random() < c.missing_scan_fraction:
                    drop = int(rng.integers(len(conds)))
                    conds, order, minutes = ([x for i, x in enumerate(v) if i != drop] for v in (conds, order, minutes))
                outlier = int(rng.integers(len(conds))) if c.outlier_fraction and rng.random() < c.outlier_fraction else -1
                for i_scan, (cond, session, minute) in enumerate(zip(conds, order, minutes)):
                    is_drug = cond == "drug"
                    z = base + ds_shift + sub_shift + (sub_scale * ds_eff if is_drug else 0.0)
                    z = z + self._deviation(rng, c.session_sd * site.noise, k)
                    if c.scan_offset_sd:
                        z = z + rng.normal(0, c.scan_offset_sd)
                    if c.order_effect:
                        z = z + c.order_effect * (int(session) - 1)
                    if i_scan == outlier:
                        shift = rng.normal(0, c.outlier_sd, (k, k))
                        z = z + (shift + shift.T) / 2
                    load = base_load + (ds_scale * sub_scale * c.drug_scale[site.drug] * loading_change if is_drug else 0.0)
                    load = np.clip(load, 0.05, 0.95)
                    fd = float(sub_fd * ((1.0 + c.motion_confound) if is_drug else 1.0) * rng.lognormal(0, 0.15))
                    ts, artifact = self._simulate(self._latent_corr(z), load, member, fd, rng, n_vol)
                    scan_id = f"ds-{site.name}_sub-{subject}_ses-{session}"
                    series[scan_id] = ts
                    if c.confounds:
                        artifacts[scan_id] = (artifact, site.name, subject, session, fd)
                    rows.append(
                        {
                            "scan_id": scan_id, "dataset": site.name, "subject": subject,
                            "session": session, "drug": site.drug, "condition": cond,
                            # a control scan (placebo, baseline) had no drug: no dose
                            "dose": site.dose if is_drug and site.dose is not None else np.nan,
                            "mean_fd": fd, "n_volumes": n_vol, "minutes_since_dose": minute,
                            "session_order": int(session),
                        }
                    )
        scans = pd.DataFrame(rows)
        truth = self._truth_table(atlas, member, self._expected_effects(population, datasets, drugs, seed))
        params = dataclasses.asdict(c) if dataclasses.is_dataclass(c) else dict(c)
        generator = fingerprint_value({"params": params, "seed": seed, "regions": atlas.labels})
        return DatasetInputs(
            scans=scans,
            timeseries=series,
            confounds=self._write_confounds(series, artifacts, generator, seed) if c.confounds else None,
            truth=truth,
            fingerprints={"synthetic_generator": generator,
                          **({"synthetic_confounds": f"version {CONFOUNDS_VERSION}"} if c.confounds else {})},
            description=f"Simulated data ({len(c.sites)} datasets, {len(scans)} scans, seed {seed})"
                        + (", with fMRIPrep-style confounds files." if c.confounds else "."),
        )

    def _deviation(self, rng, sd: float, k: int, n: Optional[int] = None) -> np.ndarray:
        """A symmetric (k, k) deviation of latent FC (n of them: (n, k, k)): normal, or Student-t
        with the same sd."""
        df = self.config.noise_df
        shape = (k, k) if n is None else (n, k, k)
        if df is None:
            d = rng.normal(0, sd, shape)
        else:
            d = sd * rng.standard_t(df, shape) / np.sqrt(df / (df - 2))
        return (d + np.swapaxes(d, -1, -2)) / 2

    def _dataset_deviation(self, rng, mask: np.ndarray, n: Optional[int] = None) -> np.ndarray | float:
        """A dataset's own deviation of its drug effect on the effect pairs (``mask``), (n, k, k)
        for n datasets; 0 unless effects.dataset_deviation_sd."""
        sd = self.config.effects.dataset_deviation_sd
        if not sd:
            return 0.0
        d = rng.normal(0, sd, mask.shape if n is None else (n, *mask.shape))
        return np.where(mask, (d + np.swapaxes(d, -1, -2)) / 2, 0.0)

    def _site_offset(self, rng, k: int, n: Optional[int] = None) -> np.ndarray:
        """A site's additive offset of latent FC (n of them: (n, k, k)): symmetric per pair, plus
        one shift of every pair (dataset_offset_sd). The scans and the drug-level truth draw it
        alike."""
        c = self.config
        shift = rng.normal(0, c.site_offset_sd, (k, k) if n is None else (n, k, k))
        shift = (shift + np.swapaxes(shift, -1, -2)) / 2
        if c.dataset_offset_sd:
            shift = shift + rng.normal(0, c.dataset_offset_sd, None if n is None else (n, 1, 1))
        return shift

    def _write_confounds(self, series: dict, artifacts: dict, generator: str, seed: int) -> dict[str, str]:
        """scan_id -> the (absent) BOLD name whose confounds files sit next to it."""
        from .synthetic_confounds import bold_name, confounds_table, write_confounds

        folder = Path(self.config.confounds_dir).expanduser() / f"v{CONFOUNDS_VERSION}-{generator.split(':')[-1][:16]}"
        out = {}
        for i, (scan_id, (artifact, dataset, subject, session, fd)) in enumerate(artifacts.items()):
            bold = bold_name(folder, dataset, subject, session)
            rng = np.random.default_rng(np.random.SeedSequence([seed, 5519, i]))
            write_confounds(bold, confounds_table(artifact, series[scan_id], fd, 2.0, rng))
            out[scan_id] = str(bold)
        return out

    def _simulate(self, latent: np.ndarray, loadings: np.ndarray, member: np.ndarray, fd: float, rng,
                  n_volumes: int) -> tuple[np.ndarray, np.ndarray]:
        """Region timeseries and the motion artifact added to every region."""
        c = self.config
        t = n_volumes
        k = latent.shape[0]
        chol = np.linalg.cholesky(latent)
        ar = [1.0, -c.ar1]
        scale = np.sqrt(1 - c.ar1**2)
        f = lfilter([scale], ar, rng.standard_normal((t, k)), axis=0) @ chol.T
        lam = loadings[member]
        e = lfilter([scale], ar, rng.standard_normal((t, len(member))), axis=0)
        x = f[:, member] * lam + e * np.sqrt(1 - lam**2)
        g = lfilter([scale], ar, rng.standard_normal(t))
        artifact = np.sqrt(c.motion_coupling * fd) * g
        return x + artifact[:, None], artifact

    def _expected_effects(self, pop: "Population", datasets: dict, drugs: list[str], seed: int,
                          n: int = 64) -> dict[str, np.ndarray]:
        """Each dataset's and drug's planted effect: the expected drug-minus-control Fisher-z FC
        (subnetwork x subnetwork) over its population of subjects and sessions (a drug's: over
        its population of datasets too), by Monte Carlo with ``n`` antithetic pairs.

        The models estimate the mean over subjects of each subject's FC change; FC is a
        nonlinear (tanh, loading products, Fisher z) function of the latent deviations, so that
        mean is not the change at the average subject, which the truth used to be: on the
        default study it lay ~3% (0.002 Fisher z on the large pairs) below it. Without time-series
        noise, motion, outlying scans or order effects (those are not drug effects).
        """
        c = self.config
        e = c.effects
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1847, 7]))
        k = pop.base.shape[0]
        out = {}

        def antithetic(x):
            return np.concatenate([x, -x])

        def effect(drug, ds_scale, ds_shift, noise, ds_dev):
            """ds_scale (2n,), ds_shift and ds_dev (2n, k, k) or fixed; subjects and sessions drawn here."""
            sub = antithetic(rng.normal(0, e.subject_scale_sd, n))
            dev = antithetic(self._deviation(rng, 0.05, k, n) + self._deviation(rng, c.session_sd * noise, k, n)
                             + (rng.normal(0, c.scan_offset_sd, (n, 1, 1)) if c.scan_offset_sd else 0.0))
            scale = np.asarray(ds_scale, dtype=float).reshape(-1, 1, 1) * (1 + sub)[:, None, None]
            control = pop.base + ds_shift + dev
            drug_z = control + scale * pop.drug_effect(drug) + (1 + sub)[:, None, None] * ds_dev
            load = np.clip(pop.base_load + scale[:, 0] * c.drug_scale[drug] * pop.loading_change, 0.05, 0.95)
            control_load = np.broadcast_to(np.clip(pop.base_load, 0.05, 0.95), load.shape)
            return (self._group_fz(drug_z, load) - self._group_fz(control, control_load)).mean(axis=0)

        for name, (drug, ds_scale, ds_shift, noise, ds_dev) in datasets.items():
            out[f"dataset:{name}"] = effect(drug, ds_scale, ds_shift, noise, ds_dev)
        for d in drugs:  # a new dataset of the drug: its scale, site offset and deviation drawn too
            ds_scale = 1 + antithetic(rng.normal(0, e.dataset_scale_sd, n))
            ds_dev = self._dataset_deviation(rng, pop.effect_mask, n)
            out[f"drug:{d}"] = effect(d, ds_scale, antithetic(self._site_offset(rng, k, n)), 1.0,
                                      antithetic(ds_dev) if np.ndim(ds_dev) else 0.0)
        return out

    def _group_fz(self, z: np.ndarray, load: np.ndarray) -> np.ndarray:
        """Fisher z of the region correlations of latent FC ``z`` (..., k, k) with loadings
        ``load`` (..., k), per pair of subnetworks: every region pair of two subnetworks (and
        every pair of distinct regions of one) has the same correlation."""
        r = load[..., :, None] * load[..., None, :] * self._latent_corr(z)
        return np.arctanh(np.clip(r, -0.999999, 0.999999))

    @staticmethod
    def _truth_table(atlas: Atlas, member: np.ndarray, effects: dict[str, np.ndarray]) -> pd.DataFrame:
        """Planted drug-minus-control effects per network pair, at every aggregation level.

        The overall truth is the mean of the drugs' planted effects: the population quantity the
        models' overall effect (the mean of the drug effects) estimates.
        """
        names = list(effects)
        z = np.stack([effects[n][np.ix_(member, member)] for n in names])
        conn = Connectomes(scan_ids=names, matrices=z, labels=atlas.labels, estimator="population")
        meta = pd.DataFrame({"scan_id": names, "dataset": "", "subject": "", "session": "", "drug": "",
                             "condition": "", "dose": np.nan, "mean_fd": np.nan})
        out = []
        for level in AGGREGATION_LEVELS:
            t = network_pair_table(conn, atlas, meta, level=level)
            part = t[["network_a", "network_b", "scan_id", "fc"]].rename(columns={"scan_id": "effect", "fc": "truth"})
            out.append(part.assign(aggregation=level))
        truth = pd.concat(out, ignore_index=True)
        drugs = truth[truth["effect"].str.startswith("drug:")]
        overall = drugs.groupby(["aggregation", "network_a", "network_b"], sort=False, as_index=False)["truth"].mean()
        truth = pd.concat([overall.assign(effect="overall"), truth], ignore_index=True)
        truth["effect_type"] = truth["effect"].str.split(":").str[0]
        truth["level"] = truth["effect"].str.split(":").str[1].fillna("")
        return truth[["aggregation", "network_a", "network_b", "effect", "effect_type", "level", "truth"]]


@dataclass
class Population:
    """What every scan of the study is drawn around: baseline latent FC and loadings, the
    planted effect pattern and loading change, and each drug's effect (its scale x the pattern
    + its own deviation)."""

    base: np.ndarray
    base_load: np.ndarray
    loading_change: np.ndarray
    drug_effect: Callable[[str], np.ndarray]
    effect_mask: np.ndarray  # the pairs with a planted effect
