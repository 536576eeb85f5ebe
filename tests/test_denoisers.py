"""fMRIPrep denoising strategies match nilearn's presets and fail clearly on bad inputs.

The confounds are the real fMRIPrep 21.x confounds nilearn ships for its own tests
(``test-v21_desc-confounds_timeseries.tsv/.json``, high motion), written next to a tiny random
BOLD image named as fMRIPrep names it, as nilearn's ``create_tmp_filepath`` does. The file has
only 30 rows, fewer than kept volumes + confounds for most strategies, so its rows are repeated
to 120 volumes (one-hot outlier columns only in the first copy, cosines recomputed).
"""

from __future__ import annotations

import importlib.resources
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from megafc.core import ConfigError, InputError
from megafc.plugins.denoisers.fmriprep_strategies import (
    CompCorDenoiser,
    ScrubbingDenoiser,
    SimpleDenoiser,
    SimpleGsrDenoiser,
    confounds_file,
)

ENTITIES = "sub-01_ses-1_task-rest"
BOLD_NAME = f"{ENTITIES}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
CONF_STEM = f"{ENTITIES}_desc-confounds_timeseries"
N_LABELS = 3
REPEATS = 4
N_VOLUMES = 30 * REPEATS
T_R = 2.0

MOTION_24 = sorted(
    f"{p}{s}"
    for p in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
    for s in ("", "_derivative1", "_power2", "_derivative1_power2")
)


def _nilearn_test_confounds() -> Path:
    data = importlib.resources.files("nilearn.interfaces.fmriprep") / "data"
    tsv = Path(str(data / "test-v21_desc-confounds_timeseries.tsv"))
    if not (tsv.is_file() and tsv.with_suffix(".json").is_file()):
        pytest.skip("nilearn's fMRIPrep test confounds (test-v21) are not installed")
    return tsv


def _long_confounds(src: Path) -> pd.DataFrame:
    """The real confounds repeated REPEATS times, still shaped as fMRIPrep writes them."""
    raw = pd.read_csv(src, sep="\t")
    later = raw.fillna(0.0)  # only the first row of derivatives / FD / DVARS is n/a
    one_hot = [c for c in raw.columns if "outlier" in c]
    later[one_hot] = 0
    table = pd.concat([raw] + [later] * (REPEATS - 1), ignore_index=True)
    n = len(table)
    table = table.drop(columns=[c for c in table.columns if c.startswith("cosine")])
    t = np.arange(n) + 0.5
    for k in range(1, int(2 * n * T_R / 128) + 1):  # fMRIPrep's 128 s DCT basis
        table[f"cosine{k - 1:02d}"] = np.sqrt(2 / n) * np.cos(np.pi * k * t / n)
    return table


@pytest.fixture
def bold(tmp_path) -> str:
    """A 4x4x4 BOLD image with one volume per confounds row, and its confounds TSV+JSON."""
    src = _nilearn_test_confounds()
    table = _long_confounds(src)
    table.to_csv(tmp_path / f"{CONF_STEM}.tsv", sep="\t", index=False, na_rep="n/a")
    shutil.copy(src.with_suffix(".json"), tmp_path / f"{CONF_STEM}.json")
    data = np.random.default_rng(0).standard_normal((4, 4, 4, len(table))).astype("float32") + 100
    path = tmp_path / BOLD_NAME
    nib.Nifti1Image(data, np.eye(4)).to_filename(path)
    return str(path)


@pytest.fixture
def labels_img() -> nib.Nifti1Image:
    labels = np.zeros((4, 4, 4), dtype="int16")
    labels[:2, :2] = 1
    labels[2:, :2] = 2
    labels[:, 2:] = 3
    return nib.Nifti1Image(labels, np.eye(4))


def _edit_tsv(bold: str, drop: list[str]) -> Path:
    tsv = Path(bold).parent / f"{CONF_STEM}.tsv"
    table = pd.read_csv(tsv, sep="\t")
    table.drop(columns=drop).to_csv(tsv, sep="\t", index=False)
    return tsv


def _nilearn(bold, strategy, **kwargs):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    return load_confounds_strategy(bold, denoise_strategy=strategy, **kwargs)


# Each megafc strategy, and the nilearn call it must reproduce exactly.
CASES = {
    "simple": (SimpleDenoiser(), "simple", {"motion": "full", "wm_csf": "basic", "demean": True}),
    "simple_gsr": (
        SimpleGsrDenoiser(),
        "simple",
        {"motion": "full", "wm_csf": "basic", "global_signal": "basic", "demean": True},
    ),
    "scrubbing": (
        ScrubbingDenoiser(ScrubbingDenoiser.Config(fd_threshold=3.0, std_dvars_threshold=3.0)),
        "scrubbing",
        {"motion": "full", "fd_threshold": 3.0, "std_dvars_threshold": 3.0, "scrub": 5, "demean": True},
    ),
    "compcor": (
        CompCorDenoiser(),
        "compcor",
        {"motion": "full", "compcor": "anat_combined", "n_compcor": 5, "demean": True},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_confounds_equal_nilearn_preset(bold, case):
    denoiser, strategy, kwargs = CASES[case]
    conf, mask = denoiser.confounds(bold)
    expected_conf, expected_mask = _nilearn(bold, strategy, **kwargs)
    pd.testing.assert_frame_equal(conf, expected_conf)
    np.testing.assert_array_equal(mask, expected_mask)
    assert denoiser.confounds_file(bold) == Path(bold).parent / f"{CONF_STEM}.tsv"


def test_confound_columns_are_documented_sets(bold):
    cols = {name: set(d.confounds(bold)[0].columns) for name, (d, _, _) in CASES.items()}
    cosines = {"cosine00", "cosine01", "cosine02"}
    assert cols["simple"] == {*MOTION_24, "csf", "white_matter", *cosines}
    assert cols["simple_gsr"] == cols["simple"] | {"global_signal"}
    wm_csf_full = {f"{p}{s}" for p in ("csf", "white_matter")
                   for s in ("", "_derivative1", "_power2", "_derivative1_power2")}
    assert cols["scrubbing"] == {*MOTION_24, *wm_csf_full, *cosines}
    assert cols["compcor"] == {*MOTION_24, *cosines, *(f"a_comp_cor_0{i}" for i in range(5))}
    # fMRIPrep's 3 non-steady-state volumes are censored by every strategy
    assert np.array_equal(SimpleDenoiser().confounds(bold)[1], np.arange(3, N_VOLUMES))


def test_compcor_component_count(bold):
    two = CompCorDenoiser(CompCorDenoiser.Config(n_compcor=2)).confounds(bold)[0]
    assert {c for c in two.columns if "comp_cor" in c} == {"a_comp_cor_00", "a_comp_cor_01"}
    everything, _ = CompCorDenoiser(CompCorDenoiser.Config(n_compcor="all")).confounds(bold)
    pd.testing.assert_frame_equal(everything, _nilearn(bold, "compcor")[0])


def test_scrubbing_censors_through_the_sample_mask(bold):
    n_volumes = nib.load(bold).shape[3]
    loose = ScrubbingDenoiser(ScrubbingDenoiser.Config(fd_threshold=100.0, std_dvars_threshold=100.0))
    strict = ScrubbingDenoiser(ScrubbingDenoiser.Config(fd_threshold=3.0, std_dvars_threshold=3.0, scrub=0))
    loose_conf, loose_mask = loose.confounds(bold)
    conf, mask = strict.confounds(bold)
    assert len(conf) == len(loose_conf) == n_volumes  # no rows deleted
    assert len(mask) < len(loose_mask) < n_volumes  # only non-steady-state censored when loose
    assert not any(c.startswith("motion_outlier") for c in conf.columns)
    # censored volumes are exactly those over a threshold (plus non-steady-state; scrub=0)
    raw = pd.read_csv(strict.confounds_file(bold), sep="\t")
    over = (raw["framewise_displacement"] > 3.0) | (raw["std_dvars"] > 3.0)
    censored = set(range(n_volumes)) - set(mask)
    assert censored == set(np.flatnonzero(over)) | {0, 1, 2}


def test_scrubbing_that_censors_everything_returns_an_empty_sample_mask(bold):
    # nilearn's default thresholds flag every volume of this high-motion test file; extraction
    # then excludes the scan (tests/test_fmriprep_route.py), the denoiser does not stop the run
    conf, mask = ScrubbingDenoiser().confounds(bold)
    assert len(conf) == 120 and mask is not None and len(mask) == 0


def test_missing_confounds_file(bold):
    (Path(bold).parent / f"{CONF_STEM}.tsv").unlink()
    for denoiser in (SimpleDenoiser(), CompCorDenoiser()):
        with pytest.raises(InputError, match="no fMRIPrep confounds file") as err:
            denoiser.confounds(bold)
        assert BOLD_NAME in str(err.value) and "desc-confounds_timeseries.tsv" in str(err.value)
    with pytest.raises(InputError, match=BOLD_NAME):
        confounds_file(bold)


@pytest.mark.parametrize(
    ("denoiser", "drop", "named"),
    [
        (SimpleDenoiser(), ["white_matter", "csf"], "wm_csf"),
        (SimpleDenoiser(), ["rot_z_power2"], "rot_z_power2"),
        (SimpleGsrDenoiser(), ["global_signal"], "global_signal"),
        (CompCorDenoiser(), [f"a_comp_cor_0{i}" for i in range(5)], "compcor"),
        (CompCorDenoiser(), ["a_comp_cor_02"], "a_comp_cor_02"),
        (CASES["scrubbing"][0], ["framewise_displacement"], "framewise_displacement"),
        (CASES["scrubbing"][0], ["std_dvars"], "std_dvars"),
    ],
)
def test_missing_columns_name_the_file(bold, denoiser, drop, named):
    tsv = _edit_tsv(bold, drop)
    with pytest.raises(InputError) as err:
        denoiser.confounds(bold)
    message = str(err.value)
    assert tsv.name in message and named in message and "expected" in message


def test_compcor_needs_the_json(bold):
    (Path(bold).parent / f"{CONF_STEM}.json").unlink()
    with pytest.raises(InputError, match=rf"{CONF_STEM}\.tsv.*json"):
        CompCorDenoiser().confounds(bold)


def test_bad_bold_files(bold, tmp_path):
    with pytest.raises(InputError, match="sub-01_task-rest_bold.nii.gz.*desc-preproc_bold"):
        SimpleDenoiser().confounds(str(tmp_path / "sub-01_task-rest_bold.nii.gz"))
    short = nib.load(bold).slicer[..., :100]
    short.to_filename(bold)
    with pytest.raises(InputError, match=rf"120 rows but BOLD file .*{BOLD_NAME} has 100 volumes"):
        SimpleDenoiser().confounds(bold)


@pytest.mark.parametrize(
    ("cls", "key", "value"),
    [
        (ScrubbingDenoiser, "fd_threshold", -1.0),
        (ScrubbingDenoiser, "std_dvars_threshold", 0.0),
        (ScrubbingDenoiser, "scrub", -2),
        (CompCorDenoiser, "n_compcor", 0),
        (CompCorDenoiser, "n_compcor", "some"),
        (SimpleDenoiser, "standardize", "zscore"),
        (SimpleDenoiser, "high_pass", -0.01),
        (SimpleGsrDenoiser, "low_pass", float("nan")),
    ],
)
def test_bad_config_names_the_key(cls, key, value):
    with pytest.raises(ConfigError, match=rf"denoiser\.{key}"):
        cls(cls.Config(**{key: value}))


def test_band_pass_order_is_checked():
    with pytest.raises(ConfigError, match=r"denoiser\.high_pass.*denoiser\.low_pass"):
        SimpleDenoiser(SimpleDenoiser.Config(high_pass=0.1, low_pass=0.01))


def test_registry_builds_strategies_from_config_values():
    from megafc.core.registry import build_registry

    reg = build_registry()
    assert {"none", "simple", "simple_gsr", "scrubbing", "compcor"} <= set(reg.plugins["denoiser"])
    assert reg.instantiate("denoiser", {"name": "compcor", "n_compcor": "all"}).config.n_compcor == "all"
    assert reg.instantiate("denoiser", {"name": "compcor", "n_compcor": "3"}).config.n_compcor == 3
    scrub = reg.instantiate("denoiser", {"name": "scrubbing", "fd_threshold": 0.3})
    assert scrub.params()["fd_threshold"] == 0.3
    with pytest.raises(ConfigError, match=r"denoiser\.fd_threshold"):
        reg.instantiate("denoiser", {"name": "scrubbing", "fd_threshold": -1})


def test_methods_sentence_states_the_strategy_as_configured():
    """methods.md's denoising sentence: the preset, its arguments, the censoring rule and the
    masker's filtering, with the values of this config (a changed threshold shows)."""
    text = ScrubbingDenoiser(ScrubbingDenoiser.Config(fd_threshold=0.3, low_pass=0.1)).describe()
    assert "load_confounds_strategy('scrubbing'" in text and "fd_threshold=0.3" in text
    assert "framewise_displacement > 0.3" in text and "low_pass=0.1" in text and "high_pass=None" in text
    assert "load_confounds_strategy('compcor'" in CompCorDenoiser().describe()
    assert "non-steady-state volumes" in SimpleGsrDenoiser().describe()


@pytest.mark.parametrize("case", CASES)
def test_masker_accepts_kwargs_confounds_and_mask(bold, labels_img, case):
    from nilearn.maskers import NiftiLabelsMasker

    denoiser = CASES[case][0]
    conf, mask = denoiser.confounds(bold)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        masker = NiftiLabelsMasker(labels_img, **denoiser.signal_kwargs(), t_r=T_R)
        ts = masker.fit_transform(bold, confounds=conf, sample_mask=mask)
    assert ts.shape == (len(mask), N_LABELS)
    assert np.all(np.isfinite(ts))
    assert np.allclose(ts.mean(axis=0), 0, atol=1e-3) and np.allclose(ts.std(axis=0, ddof=1), 1, atol=1e-3)


def test_band_pass_with_censoring(bold, labels_img):
    from nilearn.maskers import NiftiLabelsMasker

    denoiser = ScrubbingDenoiser(
        ScrubbingDenoiser.Config(fd_threshold=3.0, std_dvars_threshold=3.0, high_pass=0.01, low_pass=0.2)
    )
    assert denoiser.signal_kwargs() == {
        "high_pass": 0.01, "low_pass": 0.2, "detrend": False, "standardize": "zscore_sample",
    }
    conf, mask = denoiser.confounds(bold)
    ts = NiftiLabelsMasker(labels_img, **denoiser.signal_kwargs(), t_r=T_R).fit_transform(
        bold, confounds=conf, sample_mask=mask
    )
    assert ts.shape == (len(mask), N_LABELS) and np.all(np.isfinite(ts))


def test_more_confounds_than_volumes_excludes_the_scan(bold, caplog):
    # nilearn's 30-row file as is: 27 kept volumes for 27 'simple' confounds
    from megafc.core import ScanImages
    from megafc.core.extraction import TOO_FEW_FOR_CONFOUNDS, extract_scan
    from megafc.plugins.atlases.synthetic import SyntheticAtlas

    src = _nilearn_test_confounds()
    shutil.copy(src, Path(bold).parent / f"{CONF_STEM}.tsv")
    nib.load(bold).slicer[..., :30].to_filename(bold)
    atlas = SyntheticAtlas(SyntheticAtlas.Config(n_cortical=34, subcortical=False, n_cerebellar=0)).load()
    with caplog.at_level("WARNING", logger="megafc"):
        out = extract_scan("scan-1", ScanImages(bold=str(bold), t_r=2.0), atlas, SimpleDenoiser(), None, "fp")
    assert out.timeseries is None and out.skipped == TOO_FEW_FOR_CONFOUNDS
    assert (out.n_volumes, out.n_kept) == (30, 27)
    assert any(BOLD_NAME in r.getMessage() and "27 confound regressors" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("tsv_text", "json_text", "named"),
    [("", None, "No columns"), ("TransX\tRotX\n1\t2\n", None, "camel case"), (None, "{oops", "JSON")],
)
def test_unreadable_confounds(bold, tsv_text, json_text, named):
    tsv = Path(bold).parent / f"{CONF_STEM}.tsv"
    if tsv_text is not None:
        tsv.write_text(tsv_text)
    if json_text is not None:
        tsv.with_suffix(".json").write_text(json_text)
    with pytest.raises(InputError, match=rf"{CONF_STEM}\.tsv.*{named}"):
        CompCorDenoiser().confounds(bold)


@pytest.mark.parametrize("case", CASES)
def test_denoising_region_timeseries_equals_the_masker(bold, labels_img, case):
    """Cleaning raw region means with the confounds files gives what the masker gives from the
    image (the route for timeseries datasets with confounds, e.g. synthetic with confounds)."""
    from nilearn.maskers import NiftiLabelsMasker

    from megafc.core.extraction import denoise_timeseries

    denoiser = CASES[case][0]
    conf, mask = denoiser.confounds(bold)
    expected = NiftiLabelsMasker(labels_img, **denoiser.signal_kwargs(), t_r=T_R).fit_transform(
        bold, confounds=conf, sample_mask=mask)
    raw = NiftiLabelsMasker(labels_img, standardize=None, t_r=T_R).fit_transform(bold)
    # the BOLD need not exist: only its confounds files are read
    Path(bold).unlink()
    out = denoise_timeseries("s", raw, bold, denoiser, T_R)
    assert out.timeseries.shape == expected.shape and out.n_kept == len(expected)
    assert np.abs(out.timeseries - expected).max() < 1e-3  # the masker works in float32
    with pytest.raises(InputError, match=r"confounds file has 120 rows but scan 's' has 100 volumes"):
        denoise_timeseries("s", raw[:100], bold, denoiser, T_R)


def test_synthetic_confounds_carry_the_motion_artifact(tmp_path):
    """With dataset.confounds=true every strategy reads the synthetic confounds like fMRIPrep's,
    and regressing the global signal removes the simulated artifact: the motion-FC coupling of
    raw timeseries (mean FC rises with FD) is gone after simple_gsr."""
    from megafc.core.extraction import denoise_timeseries
    from megafc.plugins.atlases.synthetic import SyntheticAtlas
    from megafc.plugins.datasets.synthetic import SiteSpec, SyntheticDataset

    atlas = SyntheticAtlas(SyntheticAtlas.Config(n_cortical=34, subcortical=False, n_cerebellar=0)).load()
    cfg = SyntheticDataset.Config(sites=[SiteSpec("a", "LSD", 40)], n_volumes=150, confounds=True,
                                  confounds_dir=str(tmp_path / "conf"), motion_coupling=1.0)
    inputs = SyntheticDataset(cfg).load(atlas, 0)
    assert set(inputs.confounds) == set(inputs.scans["scan_id"])
    fd = inputs.scans.set_index("scan_id")["mean_fd"]

    def motion_fc(clean) -> float:
        mean_fc = {s: np.arctanh(np.corrcoef(clean(s).T)[np.triu_indices(atlas.n_regions, 1)]).mean()
                   for s in inputs.timeseries}
        return float(np.corrcoef(fd.loc[list(mean_fc)], list(mean_fc.values()))[0, 1])

    raw = motion_fc(lambda s: inputs.timeseries[s])
    for denoiser in (SimpleDenoiser(), SimpleGsrDenoiser(), ScrubbingDenoiser(), CompCorDenoiser()):
        out = denoise_timeseries("x", inputs.timeseries[next(iter(inputs.confounds))],
                                 next(iter(inputs.confounds.values())), denoiser, 2.0)
        assert out.timeseries is not None and out.n_kept >= 100
    gsr = motion_fc(lambda s: denoise_timeseries(s, inputs.timeseries[s], inputs.confounds[s],
                                                 SimpleGsrDenoiser(), 2.0).timeseries)
    assert raw > 0.5 and abs(gsr) < 0.3
