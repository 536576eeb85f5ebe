"""The scan-level design: every included scan with its dataset, subject, unit and covariates.

Used by the scan-level models (``pymc``, ``bambi``, ``meta``). Unlike paired differences it
needs no pairing, so crossover, pre/post, parallel-group and mixed designs all enter, and
subjects with a single scan still count.

A *unit* is the dataset (or ``dataset[drug]`` when one dataset gives several drugs): the level
at which a drug effect is estimated. Control scans belong to their dataset, not to a unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from megafc.core import CONTROL_CONDITIONS, ConfigError, InputError, baseline_only_datasets

from .design import PoolingLevels

#: Scan metadata the scan-level models use (beyond the outcome columns).
OBS_COLUMNS = ("scan_id", "dataset", "subject", "drug", "condition", "dose", "mean_fd")


def motion_on(design: "ScanDesign", wanted: bool | None) -> tuple[bool, str]:
    """pooling.motion: whether effects are adjusted for mean FD, and a note naming the scans
    without it when they are not (null: adjusted only when every included scan has mean FD)."""
    fd = pd.to_numeric(design.obs["mean_fd"], errors="coerce").to_numpy(dtype=float)
    missing = design.obs.loc[~np.isfinite(fd), "scan_id"].astype(str).tolist()
    which = f"{len(missing)} included scan(s) have no mean_fd ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})"
    if wanted is None:
        return (True, "") if not missing else (False, f"{which}, so effects are not adjusted for motion "
                                                      "(pooling.motion=null switches it on only when every scan has it)")
    if wanted and missing:
        raise ConfigError(f"config key 'pooling.motion' is true but {which}; provide mean FD (the metadata table's "
                          "mean_fd column) or set pooling.motion=false")
    return bool(wanted), ""


@dataclass
class ScanDesign(PoolingLevels):
    """Outcomes in wide form (scans x outcomes) with their grouping."""

    y: np.ndarray  # (S, P)
    pairs: pd.DataFrame  # network_a, network_b, system_a, system_b (column order of y)
    obs: pd.DataFrame  # one row per scan: OBS_COLUMNS + unit ("" for control scans)
    drugs: list[str]
    units: list[str]
    datasets: list[str]
    dataset_idx: np.ndarray  # (S,)
    subject_idx: np.ndarray  # (S,) subjects numbered across datasets
    unit_idx: np.ndarray  # (S,) -1 for control scans
    unit_drug: np.ndarray  # (U,)
    unit_dataset: np.ndarray  # (U,)
    notes_: list[str] = field(default_factory=list)

    @property
    def is_drug(self) -> np.ndarray:
        return self.unit_idx >= 0

    @property
    def drug_idx(self) -> np.ndarray:
        """Drug index of each drug scan (-1 for controls)."""
        return np.where(self.is_drug, self.unit_drug[np.maximum(self.unit_idx, 0)], -1)

    @property
    def n_subjects(self) -> int:
        return int(self.subject_idx.max()) + 1

    def notes(self) -> list[str]:
        return super().notes() + self.notes_

    def n_obs(self, etype: str, level: str) -> int:
        """Scans informing an effect: the drug scans and the control scans of its datasets."""
        ds_of = {d: set(self.unit_dataset[self.unit_drug == i]) for i, d in enumerate(self.drugs)}
        if etype == "drug":
            keep = np.isin(self.dataset_idx, list(ds_of[level]))
        elif etype == "dataset":
            keep = self.dataset_idx == self.unit_dataset[self.units.index(level)]
        elif etype == "contrast":
            a, b = level.split("-", 1)
            keep = np.isin(self.dataset_idx, list(ds_of[a] | ds_of[b]))
        else:
            keep = np.ones(len(self.obs), dtype=bool)
        return int(keep.sum())

    def design_summary(self) -> str:
        """Counts of subjects by design, for methods text."""
        parts = []
        per_subject = self.obs.assign(s=self.subject_idx).groupby("s")["condition"].agg(
            lambda c: (int((c == "drug").sum()), int(c.isin(CONTROL_CONDITIONS).sum())))
        both = sum(1 for d, c in per_subject if d and c)
        drug_only = sum(1 for d, c in per_subject if d and not c)
        ctrl_only = sum(1 for d, c in per_subject if c and not d)
        parts.append(f"{both} subjects with drug and control scans")
        if drug_only or ctrl_only:
            parts.append(f"{drug_only} with drug scans only and {ctrl_only} with control scans only")
        multi = sum(1 for d, c in per_subject if d > 1)
        if multi:
            parts.append(f"{multi} with several drug scans")
        return ", ".join(parts)


def scan_design(pairs: pd.DataFrame) -> ScanDesign:
    """The scan-level design from the network-pair table (one row per scan and pair)."""
    if pairs.empty:
        raise InputError("pooling: the network-pair table is empty; no scans to pool")
    wide = pairs.pivot_table(index="scan_id", columns=["network_a", "network_b"], values="fc", sort=False)
    if wide.isna().any().any():
        bad = wide.index[wide.isna().any(axis=1)][:5].tolist()
        raise InputError(f"pooling: scan(s) {bad} lack FC for some network pairs (NaN in the network-pair table)")
    obs = pairs.drop_duplicates("scan_id").set_index("scan_id").loc[wide.index].reset_index()
    obs["dataset"] = obs["dataset"].astype(str)
    obs["subject"] = obs["subject"].astype(str)
    check_identifiable(obs)
    pair_meta = pairs.drop_duplicates(["network_a", "network_b"]).set_index(["network_a", "network_b"])
    pair_meta = pair_meta.loc[wide.columns, ["system_a", "system_b"]].reset_index()
    pair_meta.attrs = {"level": pairs.attrs.get("level", "network")}  # what the outcomes are pairs of

    drug_rows = obs["condition"] == "drug"
    n_drugs_per_ds = obs[drug_rows].groupby("dataset")["drug"].nunique()
    multi = set(n_drugs_per_ds.index[n_drugs_per_ds > 1])
    obs["unit"] = [
        (f"{ds}[{d}]" if ds in multi else ds) if is_drug else ""
        for ds, d, is_drug in zip(obs["dataset"], obs["drug"], drug_rows)
    ]
    drugs = sorted(obs.loc[drug_rows, "drug"].unique())
    units = list(dict.fromkeys(obs[drug_rows].sort_values(["drug", "unit"])["unit"]))
    datasets = sorted(obs["dataset"].unique())
    unit_info = obs[drug_rows].drop_duplicates("unit").set_index("unit").loc[units]
    subject_key = obs["dataset"] + "\x00" + obs["subject"]
    subjects = {k: i for i, k in enumerate(dict.fromkeys(subject_key))}
    notes = []
    if multi:
        notes.append(f"dataset(s) {sorted(multi)} give several drugs: one effect per dataset and drug, sharing "
                     "the dataset's intercept and subjects")
    return ScanDesign(
        y=wide.to_numpy(dtype=float),
        pairs=pair_meta,
        obs=obs[[c for c in (*OBS_COLUMNS, "unit", "minutes_since_dose", "session_order") if c in obs.columns]],
        drugs=drugs,
        units=units,
        datasets=datasets,
        dataset_idx=np.array([datasets.index(d) for d in obs["dataset"]]),
        subject_idx=np.array([subjects[k] for k in subject_key]),
        unit_idx=np.array([units.index(u) if u else -1 for u in obs["unit"]]),
        unit_drug=np.array([drugs.index(d) for d in unit_info["drug"]]),
        unit_dataset=np.array([datasets.index(d) for d in unit_info["dataset"]]),
        notes_=notes,
    )


def check_identifiable(obs: pd.DataFrame) -> None:
    """Every dataset needs drug and control scans, or its drug effect is its intercept."""
    for ds, g in obs.groupby("dataset", sort=True):
        n_drug = int((g["condition"] == "drug").sum())
        n_ctrl = int(g["condition"].isin(CONTROL_CONDITIONS).sum())
        if n_drug and not n_ctrl:
            raise InputError(
                f"pooling: dataset '{ds}' has {n_drug} drug scan(s) but no included control (placebo or "
                "baseline) scan, so its drug effect cannot be told apart from its own mean FC; add its control "
                "scans, or leave the dataset out"
            )
        if n_ctrl and not n_drug:
            raise InputError(
                f"pooling: dataset '{ds}' has {n_ctrl} control scan(s) but no included drug scan, so it "
                "informs no drug effect; leave the dataset out"
            )


def doses_given(dose: np.ndarray, drug: np.ndarray, drugs: list[str]) -> dict[str, np.ndarray]:
    """Each drug's distinct doses (``dose`` and ``drug``: one per drug scan; a missing dose left
    out). A dose slope needs two or more: one dose tells it nothing."""
    dose = pd.to_numeric(pd.Series(dose), errors="coerce").to_numpy(dtype=float)
    return {d: np.unique(dose[(np.asarray(drug) == d) & np.isfinite(dose)]) for d in drugs}


def covariate_matrix(design: ScanDesign, motion: bool, dose_reference: dict[str, float] | None = None,
                     time: bool = False, time_reference: float | None = None, order: bool = False,
                     ) -> tuple[np.ndarray, list[str], dict[str, float], list[str]]:
    """Scan-level covariates (S, Q), their names, scales (column = (value - mean) / scale) and notes.

    * ``mean_fd``: standardised over all scans (effects are at equal motion; the slope is
      reported per mm as ``slope / scale``);
    * ``dose:<drug>``: on that drug's scans, dose / reference dose - 1 (effects are at the
      reference dose; the slope is the change per reference dose);
    * ``minutes_since_dose``: on drug scans, (minutes - reference) / 60 (per hour);
    * ``session_order``: on every scan, its place among its subject's sessions, centred (per
      session): effects are at equal session order, so an order effect (habituation, drift)
      learned where drug and control sessions come in either order is taken out of the
      datasets whose drug scans always come second.
    """
    obs = design.obs
    cols, names, scales, notes = [], [], {}, []
    if motion:
        fd = obs["mean_fd"].to_numpy(dtype=float)
        scale = float(fd.std()) or 1.0
        cols.append((fd - fd.mean()) / scale)
        names.append("mean_fd")
        scales["mean_fd"] = scale
    if dose_reference is not None:
        dose = pd.to_numeric(obs["dose"], errors="coerce").to_numpy(dtype=float)
        # a slope needs doses that differ within the drug: one dose (or none) tells it nothing,
        # and a slope learned only from the other drugs would move that drug's effect to a
        # reference dose it was never given at
        drug_of = np.asarray(design.drugs, dtype=object)[np.maximum(design.drug_idx, 0)]
        given = doses_given(dose[design.is_drug], drug_of[design.is_drug], design.drugs)
        varying = [d for d in design.drugs if len(given[d]) > 1]
        if not varying:
            raise ConfigError("config key 'pooling.dose' is true but the dose does not vary within any drug "
                              f"({ {d: list(map(float, v)) for d, v in given.items()} }), so nothing tells a dose "
                              "slope; set pooling.dose=false")
        missing = [d for d in varying if d not in dose_reference]
        if missing:
            raise ConfigError(
                f"config key 'pooling.dose_reference' has no reference dose for drug(s) {missing}; give one per "
                f"drug whose dose varies, e.g. pooling.dose_reference={{{', '.join(f'{d}: 1' for d in varying)}}}"
            )
        bad = {d: v for d, v in dose_reference.items() if not (np.isfinite(v) and v > 0)}
        if bad:
            raise ConfigError(f"config key 'pooling.dose_reference' has non-positive value(s) {bad}")
        one = {d: float(v[0]) for d, v in given.items() if len(v) == 1}
        if one:
            notes.append(f"drug(s) given at one dose each ({', '.join(f'{d} {v:g}' for d, v in one.items())}) have "
                         "no dose slope: nothing in the data tells it, so their effects are at that dose")
        none = [d for d, v in given.items() if not len(v)]
        if none:
            notes.append(f"drug(s) {none} have no dose: no dose slope, their effects are as given")
        unused = sorted(set(dose_reference) - set(varying))
        if unused:
            notes.append(f"pooling.dose_reference for {unused} is not used (not in the data, or no dose slope)")
        undosed = sorted(set(obs.loc[design.is_drug & ~np.isfinite(dose) & obs["drug"].isin(varying), "dataset"]))
        if undosed:
            notes.append(f"dataset(s) {undosed} give no dose: their drug effects are taken as at the reference dose")
        for i, d in enumerate(design.drugs):
            if d not in varying:
                continue
            on = design.is_drug & (design.drug_idx == i)
            col = np.where(on & np.isfinite(dose), dose / dose_reference[d] - 1.0, 0.0)
            cols.append(col)
            names.append(f"dose:{d}")
    if time:
        if "minutes_since_dose" not in obs.columns:
            raise ConfigError("config key 'pooling.time' is true but the scans have no 'minutes_since_dose' column")
        minutes = pd.to_numeric(obs["minutes_since_dose"], errors="coerce").to_numpy(dtype=float)
        lacking = design.is_drug & ~np.isfinite(minutes)
        if lacking.any():
            raise ConfigError(
                f"config key 'pooling.time' is true but {int(lacking.sum())} drug scan(s) have no minutes_since_dose "
                f"(e.g. {obs.loc[lacking, 'scan_id'].iloc[0]}); fill the column or set pooling.time=false"
            )
        ref = float(np.mean(minutes[design.is_drug])) if time_reference is None else float(time_reference)
        if time_reference is None:
            notes.append(f"drug effects are at {ref:.0f} minutes after dosing (the mean over drug scans)")
        cols.append(np.where(design.is_drug, (minutes - ref) / 60.0, 0.0))
        names.append("minutes_since_dose")
    if order:
        position = session_positions(design)
        cols.append(position - position.mean())
        names.append("session_order")
        scales["session_order"] = 1.0
        if not counterbalanced(design, position):
            notes.append("no subject has a control scan after a drug scan, so the session-order slope is told from "
                         "the drug effects only by the differences between a subject's drug scans and its prior")
    return (np.column_stack(cols) if cols else np.zeros((len(obs), 0))), names, scales, notes


def session_positions(design: ScanDesign) -> np.ndarray:
    """Each scan's ``session_order`` (1 = the subject's first session); errors name the key and column."""
    missing = missing_positions(design)
    if missing is None:
        raise ConfigError("config key 'pooling.session_order' is true but the scans have no 'session_order' column "
                          "(each scan's place among its subject's sessions, 1 = first); add it to the metadata "
                          "table or set pooling.session_order=false")
    position = _positions(design.obs)
    if missing:
        bad = ~(position >= 1)
        raise ConfigError(
            f"config key 'pooling.session_order' is true but {missing} included scan(s) have no session_order "
            f"of 1 or more (e.g. {design.obs.loc[bad, 'scan_id'].iloc[0]}); fill the column or set "
            "pooling.session_order=false")
    return position


def missing_positions(design: ScanDesign) -> int | None:
    """Scans without a valid ``session_order`` (None: the scans have no such column)."""
    if "session_order" not in design.obs.columns:
        return None
    return int((~(_positions(design.obs) >= 1)).sum())


def _positions(obs: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(obs["session_order"], errors="coerce").to_numpy(dtype=float)


def counterbalanced(design: ScanDesign, position: np.ndarray) -> bool:
    """Whether some subject has a control scan after one of its drug scans: what separates a
    session-order effect from the drug's."""
    frame = pd.DataFrame({"subject": design.subject_idx, "drug": design.is_drug, "position": position})
    first_drug = frame[frame["drug"]].groupby("subject")["position"].min()
    last_control = frame[~frame["drug"]].groupby("subject")["position"].max()
    both = first_drug.index.intersection(last_control.index)
    return bool((last_control[both] > first_drug[both]).any())


def session_order_on(design: ScanDesign, wanted: bool | None) -> tuple[bool, str]:
    """Whether a scan-level model takes the session-order slope (config ``pooling.session_order``),
    and a note for its methods: null adjusts whenever the scans can tell an order effect from
    the drug's (every scan has a session_order and some subject has a control after a drug)."""
    if wanted is not None:
        return bool(wanted), "" if wanted else order_hint(design)
    missing = missing_positions(design)
    if missing is None:
        return False, ""
    if missing:
        return False, (f"{missing} scan(s) have no session_order, so effects are not adjusted for session order "
                       "(pooling.session_order=null switches it on only when every scan has it)")
    return counterbalanced(design, session_positions(design)), ""


def order_hint(design: ScanDesign) -> str:
    """Which datasets' drug effects carry any order effect, when the data could take it out."""
    if missing_positions(design) != 0 or not counterbalanced(design, session_positions(design)):
        return ""
    return order_note(baseline_only_datasets(design.obs), "a baseline")


def order_note(later: list[str], control: str) -> str:
    """The methods note for datasets whose drug scans all come after ``control`` while the slope
    is off ("" when there are none); the pooling models that have the slope share it."""
    if not later:
        return ""
    return (f"dataset(s) {later} scan the drug only after {control}, so their drug effects include any "
            "session-order effect; pooling.session_order=true (or null) takes out the order effect that the "
            "datasets with counterbalanced sessions show")
