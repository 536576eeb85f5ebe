"""The data model: plain values passed from one pipeline stage to the next.

Every stage takes and returns one of these (or a tidy DataFrame), so a stage can be tested
alone and a plugin never depends on what ran before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError

#: Allowed values of the scan table's ``condition`` column. ``baseline`` is the control of a
#: fixed-order pre/post design (no placebo), ``placebo`` that of a crossover design.
CONDITIONS: tuple[str, ...] = ("drug", "placebo", "baseline")
CONTROL_CONDITIONS: tuple[str, ...] = ("placebo", "baseline")

#: The scan table's columns, in order. One row per scan; excluded scans stay in the table.
SCAN_COLUMNS: tuple[str, ...] = (
    "scan_id",
    "dataset",
    "subject",
    "session",
    "drug",
    "condition",
    "dose",
    "mean_fd",
    "n_volumes",
    "excluded",
    "exclusion_reason",
)
_REQUIRED_SCAN_COLUMNS = ("dataset", "subject", "session", "drug", "condition")

#: System classes a network can belong to; used by summaries (e.g. transmodal <-> unimodal).
SYSTEMS: tuple[str, ...] = ("unimodal", "transmodal", "attention", "subcortical", "cerebellar")
REGION_COLUMNS: tuple[str, ...] = ("label", "network", "subnetwork", "system")

#: Levels at which connectomes can be aggregated into network pairs.
AGGREGATION_LEVELS: tuple[str, ...] = ("network", "subnetwork")


def make_scan_id(dataset: str, subject: str, session: str, run: Any = None) -> str:
    """A scan's stable identifier, BIDS-flavoured so it reads well in file names."""
    parts = [f"ds-{dataset}", f"sub-{subject}", f"ses-{session}"]
    if run is not None and not (isinstance(run, float) and np.isnan(run)) and str(run) != "":
        parts.append(f"run-{run}")
    return "_".join(parts)


def validate_scans(scans: pd.DataFrame, source: str = "scan table") -> pd.DataFrame:
    """Check and normalise a scan table; returns a copy with every column of SCAN_COLUMNS.

    ``source`` names where the table came from (a file, a plugin) so errors can say so.
    """
    if not isinstance(scans, pd.DataFrame):
        raise InputError(f"{source}: expected a pandas DataFrame, got {type(scans).__name__}")
    missing = [c for c in _REQUIRED_SCAN_COLUMNS if c not in scans.columns]
    if missing:
        raise InputError(
            f"{source}: missing required column(s) {missing}; "
            f"a scan table needs {list(_REQUIRED_SCAN_COLUMNS)}"
        )
    out = scans.copy()
    first = scans.attrs.get("first_line")  # a table read from a file names its rows by line

    def rows(mask: Any) -> str:
        where = out.index[np.asarray(mask, dtype=bool)][:5]
        return f"line(s) {[int(i) + first for i in where]}" if first is not None else f"row(s) {list(where)}"

    for col in ("dataset", "subject", "session", "drug", "condition"):
        if out[col].isna().any():
            raise InputError(f"{source}: column '{col}' is empty in {rows(out[col].isna())}")
        # a stray space ('psilocybin ') would make another drug, dataset or subject
        out[col] = out[col].astype(str).str.strip()
        if col != "session" and (out[col] == "").any():  # '' is a plugin's "no session label"
            raise InputError(f"{source}: column '{col}' is empty in {rows(out[col] == '')}")
    names = sorted(set(out["drug"]))
    alike = sorted({n for n in names if sum(m.casefold() == n.casefold() for m in names) > 1})
    if alike:
        raise InputError(f"{source}: column 'drug' spells one name in several ways {alike} ({rows(out['drug'].isin(alike))}); "
                         "each spelling would be a drug of its own: use one")
    # effect names are drug:<drug> and contrast:<drug a>-<drug b>: a '-' or ':' in a drug's name
    # would make them ambiguous (5-MeO-DMT vs LSD: contrast:5-MeO-DMT-LSD)
    odd = sorted(d for d in set(out["drug"]) if "-" in d or ":" in d)
    if odd:
        raise InputError(
            f"{source}: column 'drug' has name(s) {odd} with '-' or ':'; effects are named drug:<drug> and "
            "contrast:<drug a>-<drug b>, which such names make ambiguous: rename them (e.g. 5-MeO-DMT as 5MeO_DMT)"
        )
    bad = sorted(set(out["condition"]) - set(CONDITIONS))
    if bad:
        raise InputError(
            f"{source}: column 'condition' has unknown value(s) {bad}; "
            f"expected one of {list(CONDITIONS)}"
        )
    if "scan_id" not in out.columns:
        run = out["run"] if "run" in out.columns else [None] * len(out)
        out["scan_id"] = [
            make_scan_id(d, s, ses, r)
            for d, s, ses, r in zip(out["dataset"], out["subject"], out["session"], run)
        ]
    dup = out["scan_id"][out["scan_id"].duplicated()]
    if len(dup):
        raise InputError(
            f"{source}: duplicate scans {sorted(set(dup))[:5]} "
            "(each dataset/subject/session/run must appear once)"
        )
    for col, default in (("dose", np.nan), ("mean_fd", np.nan), ("n_volumes", np.nan)):
        if col not in out.columns:
            out[col] = default
        out[col] = pd.to_numeric(out[col], errors="raise") if len(out) else out[col]
    if "excluded" not in out.columns:
        out["excluded"] = False
    out["excluded"] = out["excluded"].astype(bool)
    if "exclusion_reason" not in out.columns:
        out["exclusion_reason"] = ""
    out["exclusion_reason"] = out["exclusion_reason"].fillna("").astype(str)
    extra = [c for c in out.columns if c not in SCAN_COLUMNS]
    out.attrs.pop("first_line", None)  # rows may be reordered or dropped from here on
    return out[list(SCAN_COLUMNS) + extra].reset_index(drop=True)


def exclude(scans: pd.DataFrame, mask: Any, reason: str) -> pd.DataFrame:
    """Mark scans as excluded with a reason, keeping earlier reasons; returns a copy."""
    out = scans.copy()
    mask = np.asarray(mask, dtype=bool) & ~out["excluded"].to_numpy()
    out.loc[mask, "excluded"] = True
    out.loc[mask, "exclusion_reason"] = reason
    return out


@dataclass
class Atlas:
    """Regions of a parcellation and the networks they belong to.

    ``regions`` has one row per region, in the order of the region timeseries columns, with
    columns ``label``, ``network`` (e.g. ``Default``), ``subnetwork`` (e.g. ``DefaultA``; the
    network itself where an atlas has no finer level) and ``system`` (one of SYSTEMS).
    Atlases with images locate their regions in one of two ways, used by extraction:

    - ``maps``: path to a 3D integer label image; ``regions`` then has an integer ``index``
      column giving each region's value in that image (0 is background);
    - ``coords``: an (n_regions, 3) array of MNI coordinates in region order, with spheres of
      ``radius`` mm (coordinate atlases such as Power, Seitzman, Dosenbach).

    ``references`` lists what to cite when the atlas is used (for methods text).
    ``positions`` are display-only MNI coordinates (n_regions, 3) for atlases with neither
    image nor coordinates (the synthetic atlas), so brain figures can still be drawn.
    ``space`` is the template space of the image or coordinates, e.g. ``MNI152NLin2009cAsym``
    (TemplateFlow's and fMRIPrep's names); None when unknown. Extraction refuses BOLD whose
    ``space`` entity is known and differs: a few mm between MNI templates misplace small regions.
    """

    name: str
    regions: pd.DataFrame
    maps: str | None = None
    coords: np.ndarray | None = None
    radius: float | None = None
    description: str = ""
    references: list[str] = field(default_factory=list)
    positions: np.ndarray | None = None
    space: str | None = None

    def __post_init__(self) -> None:
        missing = [c for c in REGION_COLUMNS if c not in self.regions.columns]
        if missing:
            raise InputError(f"atlas '{self.name}': region table lacks column(s) {missing}")
        if self.regions["label"].duplicated().any():
            dup = sorted(set(self.regions["label"][self.regions["label"].duplicated()]))
            raise InputError(f"atlas '{self.name}': duplicate region labels {dup[:5]}")
        bad = sorted(set(self.regions["system"]) - set(SYSTEMS))
        if bad:
            raise InputError(
                f"atlas '{self.name}': unknown system class(es) {bad}; expected {list(SYSTEMS)}"
            )
        self.regions = self.regions.reset_index(drop=True)
        if self.maps is not None and "index" not in self.regions.columns:
            raise InputError(f"atlas '{self.name}': a label image needs an integer 'index' column in the region table")
        if self.coords is not None and np.shape(self.coords) != (len(self.regions), 3):
            raise InputError(
                f"atlas '{self.name}': coords must have shape ({len(self.regions)}, 3), got {np.shape(self.coords)}"
            )

    @property
    def labels(self) -> list[str]:
        return list(self.regions["label"])

    @property
    def n_regions(self) -> int:
        return len(self.regions)

    def groups(self, level: str) -> list[str]:
        """Networks (or subnetworks) in atlas order, each once."""
        if level not in AGGREGATION_LEVELS:
            raise InputError(f"aggregation level '{level}': expected one of {AGGREGATION_LEVELS}")
        return list(dict.fromkeys(self.regions[level]))

    def systems(self, level: str) -> dict[str, str]:
        """Map each network (or subnetwork) to its system class."""
        return dict(zip(self.regions[level], self.regions["system"]))

    def centroids(self, display: bool = True) -> np.ndarray | None:
        """(n_regions, 3) world (mm) coordinates of each region's centre; None without image or coords.

        Label images give each region's centre of mass; an empty region is NaN. ``display``:
        fall back to the display-only ``positions`` (for figures, never for measurements).
        """
        if self.coords is not None:
            return np.asarray(self.coords, dtype=float)
        if self.maps is None:
            return None if self.positions is None or not display else np.asarray(self.positions, dtype=float)
        import nibabel as nib
        from scipy import ndimage

        img = nib.load(self.maps)
        data = np.asarray(img.dataobj).astype(np.int64)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        index = self.regions["index"].astype(int).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            com = np.array(ndimage.center_of_mass(np.ones(data.shape), data, index), dtype=float)
        return nib.affines.apply_affine(img.affine, com)


@dataclass
class ScanImages:
    """One scan's preprocessed images, as extraction needs them."""

    bold: str
    t_r: float
    mask: str | None = None
    confounds: str | None = None
    #: BIDS entities for output names, e.g. {"sub": "01", "ses": "drug", "task": "rest", "space": ...}
    entities: dict[str, str] = field(default_factory=dict)


@dataclass
class DatasetInputs:
    """What a dataset plugin hands to the pipeline.

    Exactly one of ``images`` (scan_id -> ScanImages, extracted with the atlas and denoiser),
    ``timeseries`` (scan_id -> n_volumes x n_regions array, columns in atlas order) or
    ``connectomes`` (scan_id -> n_regions x n_regions Fisher-z matrix) is set.
    ``truth`` holds planted effects for simulated data (one row per network pair and effect).
    ``fingerprints`` maps each input (file or generator) to a content hash for provenance.
    ``confounds`` (with ``timeseries`` only) maps a scan to the fMRIPrep-style BOLD name whose
    confounds file (``*_desc-confounds_timeseries.tsv`` next to it; the BOLD itself need not
    exist) the denoiser reads: the timeseries are then raw region means, cleaned by the
    pipeline exactly as a masker would clean them (``t_r`` from ``scans['t_r']`` or 2 s).
    """

    scans: pd.DataFrame
    images: dict[str, ScanImages] | None = None
    timeseries: dict[str, np.ndarray] | None = None
    confounds: dict[str, str] | None = None
    connectomes: dict[str, np.ndarray] | None = None
    truth: pd.DataFrame | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    description: str = ""


#: Correlations are clipped to this magnitude before arctanh, so perfectly collinear regions
#: stay finite (z ~ 8.4); the ``connectomes`` dataset refuses or reports such values in its files.
FISHER_Z_MAX_ABS_R = 1 - 1e-7


@dataclass
class Connectomes:
    """Region x region matrices of the included scans, stacked in ``scan_ids`` order."""

    scan_ids: list[str]
    matrices: np.ndarray  # (n_scans, n_regions, n_regions), Fisher z, zero diagonal
    labels: list[str]
    estimator: str

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.matrices.shape != (len(self.scan_ids), n, n):
            raise InputError(
                f"connectomes: expected shape {(len(self.scan_ids), n, n)}, "
                f"got {self.matrices.shape}"
            )


@dataclass
class PoolingResult:
    """What a pooling model returns (NiMARE's Estimator -> Result split).

    ``effects``: one row per network pair and effect, with EFFECT_COLUMNS.
    ``diagnostics``: one row per sampled quantity group (or per run) with sampler health.
    ``idata``: the ArviZ InferenceData (None for non-Bayesian models).
    ``description``: a methods paragraph saying what was fitted, for reports.
    """

    effects: pd.DataFrame
    diagnostics: pd.DataFrame
    idata: Any = None
    description: str = ""
    warnings: list[str] = field(default_factory=list)
    #: Extra tidy tables, written as ``<name>.tsv`` (e.g. summaries, drug_similarity).
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: Extra matplotlib figures, written as ``figures/<name>.png``.
    figures: dict[str, Any] = field(default_factory=dict)
    #: What hdi_low/hdi_high are, for figure legends: e.g. "95% HDI" or "95% CI".
    interval: str = "95% HDI"
    #: The kind of interval in hdi_low/hdi_high: HDI (Bayesian highest density), ETI (Bayesian
    #: equal-tailed) or CI (frequentist confidence); read from ``interval`` when not given.
    interval_kind: str = ""
    #: What to cite for this particular fit, beyond the pooling plugin's declared ``references``.
    references: list[str] = field(default_factory=list)
    #: Scan covariates the effects are adjusted for (``mean_fd``, ``session_order``, ...); None:
    #: the model does not say. Core's motion and session-order warnings read it.
    adjusted_for: list[str] | None = None
    #: Column descriptions in the model's own words, per table ("effects", "summaries" or a name
    #: in ``tables``): column -> (description, units or None), for each table's JSON data
    #: dictionary; they take precedence over core's descriptions of effect columns.
    columns: dict[str, dict[str, tuple[str, str | None]]] = field(default_factory=dict)
    #: False when the sampler's own health (chains that have not converged on some sampled
    #: quantity, low BFMI) puts every row in doubt, beyond each row's ``ok``; the reason is
    #: among ``warnings``.
    sampler_ok: bool = True

    def __post_init__(self) -> None:
        if not self.interval_kind:
            words = self.interval.upper().split()
            self.interval_kind = next((w for w in ("CI", "ETI", "HDI") if w in words), "HDI")


@dataclass
class PoolingInputs:
    """Everything a pooling model is given: one value, so a model never reaches for more.

    ``pairs`` is the network-pair table (plus summary outcomes for models that fit them);
    ``connectomes`` and ``atlas`` are filled only for models that declare
    ``needs_connectomes = True`` (edge-level models), else None.
    """

    pairs: pd.DataFrame
    seed: int
    scans: pd.DataFrame
    connectomes: Connectomes | None = None
    atlas: Atlas | None = None


#: Columns of effects.tsv (a pooling model may add more after these).
EFFECT_COLUMNS: tuple[str, ...] = (
    "network_a",
    "network_b",
    "effect",
    "effect_type",
    "level",
    "mean",
    "sd",
    "hdi_low",
    "hdi_high",
    "pd",
    "r_hat",
    "ess_bulk",
    "ess_tail",
    "divergences",
    "ok",
)
