"""Confound strategies for fMRIPrep outputs, built on nilearn's ``load_confounds_strategy``.

Four presets: ``simple``, ``simple_gsr``, ``scrubbing`` and ``compcor``. Each delegates the choice
of columns, the demeaning and the sample mask to nilearn, so results match nilearn's own presets
exactly; this module only maps megafc's config onto nilearn's parameters and turns nilearn's
errors about missing files or columns into ``InputError``\\ s that name the file.

Every strategy also keeps what nilearn always does: fMRIPrep's cosine (DCT) regressors, which are
the high-pass filter (128 s cutoff, about 0.008 Hz), and censoring of the non-steady-state
volumes that fMRIPrep flagged (``non_steady_state_outlier*``) through the sample mask. Band-pass
filtering in the masker is therefore off by default (``high_pass``/``low_pass`` null).
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import pandas as pd

from megafc.core import Choice, ConfigError, Denoiser, InputError

class Standardize(Choice):
    """``standardize`` values nilearn 0.14 maskers take without a FutureWarning (null: no scaling)."""

    zscore_sample = "zscore_sample"
    psc = "psc"

#: What nilearn expects of a BOLD file name to find its confounds (nii.gz only: extraction is
#: volumetric).
BOLD_PATTERN = "<entities>_desc-preproc_bold.nii.gz"


#: How the expected columns are described in error messages.
MOTION_TEXT = "the 24 motion columns (trans_x..rot_z, each with _derivative1, _power2, _derivative1_power2)"


def _describe_nilearn_error(exc: Exception) -> str:
    """nilearn's missing-column errors, reworded; anything else as nilearn said it."""
    text = str(exc.args[0]) if exc.args else str(exc)
    if isinstance(exc, json.JSONDecodeError):
        return f"its .json sidecar is not valid JSON ({exc})"
    if isinstance(exc, KeyError):  # pandas: "['a', 'b'] not in index" or just the label
        found = re.fullmatch(r"\[(.*)\] not in index", text)
        return f"missing column(s) {found.group(1) if found else repr(text)}"
    found = re.search(r"missing:\s*(\[.*?\])\s*(\[.*?\])", text)
    if found:
        columns, groups = (ast.literal_eval(g) for g in found.groups())
        parts = ([f"missing column(s) {', '.join(map(repr, columns))}"] if columns else []) + (
            [f"no {', '.join(groups)} columns"] if groups else []
        )
        return " and ".join(parts)
    return text.strip()


def _positive(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ConfigError(f"config key 'denoiser.{key}' is {value!r}; expected a positive number")


def confounds_file(bold_file: str | Path) -> Path:
    """The fMRIPrep confounds TSV nilearn uses for ``bold_file`` (recorded for provenance).

    Uses nilearn's own lookup, so it is the file ``confounds()`` reads.
    """
    from nilearn.interfaces.fmriprep.load_confounds_utils import get_confounds_file

    bold = str(bold_file)
    try:
        found = get_confounds_file(bold, flag_full_aroma=False, flag_tedana=False)
    except ValueError as exc:
        if "Could not find" in str(exc):
            name = Path(bold).name
            expected = name.replace("_desc-preproc_bold.nii.gz", "_desc-confounds_timeseries.tsv")
            raise InputError(
                f"BOLD file {bold}: no fMRIPrep confounds file next to it; expected "
                f"e.g. {expected} (with its .json) in {Path(bold).parent}"
            ) from None
        if "more than one" in str(exc):
            raise InputError(f"BOLD file {bold}: {exc}; expected exactly one") from None
        raise InputError(
            f"BOLD file {bold}: not an fMRIPrep volumetric output; expected a name like "
            f"{BOLD_PATTERN} ({exc})"
        ) from None
    return Path(found)


class FmriprepDenoiser(Denoiser):
    """Shared base: a nilearn ``load_confounds_strategy`` preset plus masker signal settings."""

    #: nilearn's preset (``denoise_strategy``) this strategy starts from.
    preset: ClassVar[str] = ""

    @dataclass
    class Config:
        #: Demean confounds (over kept volumes), as nilearn recommends for its maskers.
        demean: bool = True
        #: Masker Butterworth high-pass (Hz). Null: fMRIPrep's cosine regressors (always
        #: included) already remove drifts below ~0.008 Hz, as in nilearn's presets.
        high_pass: float | None = None
        #: Masker Butterworth low-pass (Hz); null keeps high frequencies (nilearn's default).
        low_pass: float | None = None
        #: Linear detrending in the masker; off because cosine regressors cover drifts.
        detrend: bool = False
        #: Timeseries scaling in the masker: zscore_sample, psc or null (none).
        standardize: Optional[Standardize] = Standardize.zscore_sample

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        c = self.config
        for key in ("high_pass", "low_pass"):
            if getattr(c, key) is not None:
                _positive(key, getattr(c, key))
        if c.high_pass is not None and c.low_pass is not None and c.high_pass >= c.low_pass:
            raise ConfigError(
                f"config keys 'denoiser.high_pass' ({c.high_pass}) and 'denoiser.low_pass' "
                f"({c.low_pass}): expected high_pass < low_pass"
            )

    def strategy_kwargs(self) -> dict[str, Any]:
        """Parameters for ``load_confounds_strategy`` beyond the preset name."""
        return {"demean": self.config.demean}

    def confounds_file(self, bold_file: str | Path) -> Path:
        """The confounds TSV used for ``bold_file`` (for provenance)."""
        return confounds_file(bold_file)

    def confounds(self, bold_file: str) -> tuple[pd.DataFrame | None, np.ndarray | None]:
        from nilearn.interfaces.fmriprep import load_confounds_strategy

        tsv = confounds_file(bold_file)
        with warnings.catch_warnings():
            # every volume censored is a scan to exclude (megafc's extraction does, saying why)
            warnings.filterwarnings("ignore", "All volumes were marked as motion outliers")
            try:
                conf, mask = load_confounds_strategy(
                    str(bold_file), denoise_strategy=self.preset, **self.strategy_kwargs()
                )
            except (ValueError, KeyError) as exc:
                raise self._input_error(tsv, exc) from None
        n_volumes = len(conf)
        self._check_volumes(bold_file, tsv, n_volumes)
        if mask is not None and len(mask) == 0:
            return conf, mask  # every volume censored (nilearn leaves the confounds undefined)
        bad = [col for col in conf.columns if not np.all(np.isfinite(conf[col].to_numpy(float)))]
        if bad:
            raise InputError(
                f"confounds file {tsv}: columns {bad} contain missing or non-finite values "
                "(beyond the first row of derivatives); expected finite confounds"
            )
        # too few kept volumes for the confounds (or none at all) is not checked here: extraction
        # excludes such a scan with its reason instead of stopping the run
        return conf, mask

    def signal_kwargs(self) -> dict[str, Any]:
        """NiftiLabelsMasker arguments; ``t_r`` comes from the data, not from here."""
        c = self.config
        return {
            "high_pass": c.high_pass,
            "low_pass": c.low_pass,
            "detrend": c.detrend,
            "standardize": None if c.standardize is None else str(c.standardize),
        }

    def describe(self) -> str:
        """The preset and every argument it was called with, the volumes censored, the masker's
        filtering and scaling: what a methods section must say about denoising."""
        kwargs = ", ".join(f"{k}={v!r}" for k, v in self.strategy_kwargs().items())
        signal = ", ".join(f"{k}={v!r}" for k, v in self.signal_kwargs().items())
        return (f"confounds and sample mask from nilearn's load_confounds_strategy('{self.preset}', {kwargs}) "
                f"on fMRIPrep's confounds (with its cosine high-pass regressors), censoring "
                f"{self._censoring_rule()}; regressed out by nilearn's signal cleaning ({signal})")

    def _censoring_rule(self) -> str:
        return "non-steady-state volumes"

    def _input_error(self, tsv: Path, exc: Exception) -> InputError:
        """Name the file and the columns nilearn could not find."""
        return InputError(
            f"confounds file {tsv}: cannot apply the '{self.name}' strategy: "
            f"{_describe_nilearn_error(exc)}; expected {self._expected()}"
        )

    def _expected(self) -> str:
        return f"fMRIPrep >= 1.2 confounds with {MOTION_TEXT}, csf and white_matter"

    def _check_volumes(self, bold_file: str, tsv: Path, n_rows: int) -> None:
        """Catch a confounds file from another run before the masker fails obscurely."""
        import nibabel as nib

        if not Path(bold_file).exists():
            return  # region timeseries with confounds files only (the pipeline checks their rows)
        try:
            shape = nib.load(str(bold_file)).shape
        except FileNotFoundError:
            raise InputError(f"BOLD file {bold_file} does not exist; expected a 4D NIfTI") from None
        except Exception as exc:
            raise InputError(f"BOLD file {bold_file} could not be read as NIfTI: {exc}") from None
        n_volumes = shape[3] if len(shape) == 4 else 1
        if n_volumes != n_rows:
            raise InputError(
                f"confounds file {tsv} has {n_rows} rows but BOLD file {bold_file} has "
                f"{n_volumes} volumes; expected one row per volume"
            )


class SimpleDenoiser(FmriprepDenoiser):
    """24 motion parameters, mean WM and CSF signals, cosine high-pass (nilearn 'simple').

    Removes trans_x/y/z and rot_x/y/z with their _derivative1, _power2 and _derivative1_power2
    (24), white_matter and csf (2), and every cosineXX column; fMRIPrep's non-steady-state
    volumes are censored through the sample mask. Keeps temporal degrees of freedom (no
    censoring for motion), at the cost of residual motion artefact (Fox et al. 2005).
    """

    name = "simple"
    preset = "simple"

    def strategy_kwargs(self) -> dict[str, Any]:
        return {"motion": "full", "wm_csf": "basic", **super().strategy_kwargs()}


class SimpleGsrDenoiser(SimpleDenoiser):
    """'simple' plus the global signal (global signal regression).

    Removes everything ``simple`` does plus the global_signal column. GSR removes widespread
    motion and respiratory artefact but shifts correlations negative, so compare it against
    ``simple`` rather than pooling the two.
    """

    name = "simple_gsr"

    def strategy_kwargs(self) -> dict[str, Any]:
        return {**super().strategy_kwargs(), "global_signal": "basic"}

    def _expected(self) -> str:
        return f"fMRIPrep >= 1.2 confounds with {MOTION_TEXT}, csf, white_matter and global_signal"


class ScrubbingDenoiser(FmriprepDenoiser):
    """Motion scrubbing: censor high-FD/DVARS volumes via the sample mask (nilearn 'scrubbing').

    Regresses the 24 motion parameters, white_matter and csf with their _derivative1, _power2 and
    _derivative1_power2 (8; nilearn's preset uses the full WM/CSF model) and the cosineXX
    columns. Volumes with framewise_displacement > fd_threshold or std_dvars >
    std_dvars_threshold, plus kept segments shorter than ``scrub`` volumes and fMRIPrep's
    non-steady-state volumes, are left out of the sample mask (Power et al. 2012, 2014); no rows
    are deleted from the confounds, so the masker censors after filtering.
    """

    name = "scrubbing"
    preset = "scrubbing"

    @dataclass
    class Config(FmriprepDenoiser.Config):
        #: Framewise displacement (mm) above which a volume is censored.
        fd_threshold: float = 0.5
        #: Standardised DVARS above which a volume is censored (fMRIPrep's default).
        std_dvars_threshold: float = 1.5
        #: Kept segments shorter than this many volumes are censored too (0: none).
        scrub: int = 5

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        c = self.config
        _positive("fd_threshold", c.fd_threshold)
        _positive("std_dvars_threshold", c.std_dvars_threshold)
        if isinstance(c.scrub, bool) or not isinstance(c.scrub, int) or c.scrub < 0:
            raise ConfigError(
                f"config key 'denoiser.scrub' is {c.scrub!r}; expected a whole number >= 0 "
                "(minimum segment length in volumes)"
            )

    def strategy_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {
            "motion": "full",
            "fd_threshold": float(c.fd_threshold),
            "std_dvars_threshold": float(c.std_dvars_threshold),
            "scrub": c.scrub,
            **super().strategy_kwargs(),
        }

    def _censoring_rule(self) -> str:
        c = self.config
        return (
            f"framewise_displacement > {c.fd_threshold} or std_dvars > "
            f"{c.std_dvars_threshold}, segments shorter than {c.scrub}, non-steady-state"
        )

    def _expected(self) -> str:
        return (
            f"fMRIPrep >= 1.2 confounds with {MOTION_TEXT}, csf and white_matter (each with "
            "_derivative1, _power2, _derivative1_power2), framewise_displacement and std_dvars"
        )


class CompCorDenoiser(FmriprepDenoiser):
    """Anatomical CompCor: WM+CSF principal components, motion, cosines (nilearn 'compcor').

    Removes the 24 motion parameters, the first ``n_compcor`` a_comp_cor_XX columns whose Mask
    is "combined" in the confounds JSON (WM and CSF together; Behzadi et al. 2007) and the
    cosineXX columns (which fMRIPrep's CompCor assumes are also regressed); fMRIPrep's
    non-steady-state volumes are censored through the sample mask.
    """

    name = "compcor"
    preset = "compcor"

    @dataclass
    class Config(FmriprepDenoiser.Config):
        #: Number of components, or "all" (fMRIPrep's 50%-variance set, nilearn's default).
        #: A fixed number keeps the regressor count, and so the degrees of freedom lost, equal
        #: across scans and sites.
        n_compcor: int | str = 5

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        n = self.config.n_compcor
        if isinstance(n, str) and n.strip().isdigit():
            n = int(n)
        if n != "all" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError(
                f"config key 'denoiser.n_compcor' is {self.config.n_compcor!r}; expected a "
                "positive whole number or 'all'"
            )
        self.config.n_compcor = n

    def strategy_kwargs(self) -> dict[str, Any]:
        return {
            "motion": "full",
            "compcor": "anat_combined",
            "n_compcor": self.config.n_compcor,
            **super().strategy_kwargs(),
        }

    def _expected(self) -> str:
        return (
            f"fMRIPrep >= 1.4 confounds with {MOTION_TEXT} and a_comp_cor_XX columns, listed with "
            "Mask 'combined' in the confounds .json next to it"
        )

