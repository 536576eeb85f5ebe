"""Real-data routes end to end on generated fMRIPrep-like trees: extraction, cache, QC, equivalence."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import TINY, assert_no_results, compose, megafc_cli
from fmriprep_tree import make_tree
from megafc.core import InputError
from megafc.core.extraction import TOO_FEW_FOR_CONFOUNDS
from megafc.core.pipeline import run_experiment
from megafc.core.registry import build_registry
from megafc.plugins.denoisers.none import NoDenoising

#: These tests are about the images' route: the fast deterministic model pools them.
POOL = ["pooling=meta", "figures=false", "report=false"]
TINY_PYMC = [o for o in TINY if o.startswith(("pooling.", "figures"))]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("fmriprep"))


def run(overrides, run_dir):
    return run_experiment(compose(overrides), build_registry(), run_dir)


@pytest.mark.slow
def test_fmriprep_cli_end_to_end_then_cached(tree, tmp_path):
    cache = tmp_path / "cache"
    args = tree.overrides("simple") + POOL + [f"extraction.cache_dir={cache}", "derivatives=all"]
    first = megafc_cli(args + ["report=true", f"hydra.run.dir={tmp_path / 'run1'}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # a real atlas image gives region centres, so the report draws the brain
    report = (tmp_path / "run1" / "report.html").read_text()
    assert 'data-name="glass_brain"' in report and 'class="connectome-view"' in report
    regions = pd.read_csv(tmp_path / "run1" / "atlas_regions.tsv", sep="\t")
    assert regions[["x", "y", "z"]].notna().all().all()
    methods = (tmp_path / "run1" / "methods.md").read_text()
    assert "Denoising: 'simple': confounds and sample mask from nilearn's load_confounds_strategy('simple'" in methods
    assert "more than 50% of their volumes censored" in methods  # the censoring rule applies to this route
    assert (pd.read_csv(tmp_path / "run1" / "qc_fc.tsv", sep="\t")["distance_mm"] > 0).all()
    ext1 = pd.read_csv(tmp_path / "run1" / "extraction.tsv", sep="\t")
    assert len(ext1) == 16 and not ext1["cached"].any()
    assert (tmp_path / "run1" / "qc_fc.tsv").exists() and (tmp_path / "run1" / "exclusions.tsv").exists()
    derivs = list((tmp_path / "run1" / "derivatives").rglob("*_stat-mean_timeseries.tsv"))
    assert len(derivs) == 16
    assert derivs[0].name.startswith("sub-") and "_space-MNI152NLin2009cAsym_seg-custom_" in derivs[0].name
    # the second identical run extracts nothing
    second = megafc_cli(args + [f"hydra.run.dir={tmp_path / 'run2'}"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    ext2 = pd.read_csv(tmp_path / "run2" / "extraction.tsv", sep="\t")
    assert ext2["cached"].all()
    p1 = pd.read_csv(tmp_path / "run1" / "network_pairs.tsv", sep="\t")
    p2 = pd.read_csv(tmp_path / "run2" / "network_pairs.tsv", sep="\t")
    assert np.allclose(p1["fc"], p2["fc"], atol=1e-5)
    # a different denoiser is a different cache entry
    third = run(tree.overrides("simple_gsr") + POOL + [f"extraction.cache_dir={cache}"], tmp_path / "run3")
    assert not pd.read_csv(third.run_dir / "extraction.tsv", sep="\t")["cached"].any()
    # the same config into the same folder is skipped while its inputs stay as they were, and
    # redone (saying why) once a BOLD image is newer than the run
    run2 = args + [f"hydra.run.dir={tmp_path / 'run2'}"]
    finished = (tmp_path / "run2" / "provenance.json").stat().st_mtime_ns
    assert megafc_cli(run2, cwd=tmp_path).returncode == 0
    assert (tmp_path / "run2" / "provenance.json").stat().st_mtime_ns == finished
    assert "skipping" in (tmp_path / "run2" / "megafc.log").read_text()
    bold = ext2["bold"].iloc[0]
    os.utime(bold)
    redo = megafc_cli(run2, cwd=tmp_path)
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert (tmp_path / "run2" / "provenance.json").stat().st_mtime_ns > finished
    assert f"inputs changed since ({bold} was modified after the run); running it again" in \
        (tmp_path / "run2" / "megafc.log").read_text()
    # a file the config names (the atlas's label table) edited since: not hidden behind the old results
    labels = pd.read_csv(tree.atlas_labels, sep="\t")
    labels.assign(note="edited").to_csv(tree.atlas_labels, sep="\t", index=False)
    try:
        assert megafc_cli(run2, cwd=tmp_path).returncode == 0
        assert f"inputs changed since (atlas.labels: {tree.atlas_labels.resolve()} has changed); running it again" \
            in (tmp_path / "run2" / "megafc.log").read_text()
    finally:
        labels.to_csv(tree.atlas_labels, sep="\t", index=False)  # the tree is shared by this module's tests


def test_derivatives_are_a_bids_derivative_dataset(tree, tmp_path):
    """dataset_description.json with the keys BIDS requires; pybids indexes the files' entities."""
    from bids import BIDSLayout

    out = run(tree.overrides("simple") + POOL + ["extraction.cache_dir=null", "derivatives=all"], tmp_path / "run")
    root = out.run_dir / "derivatives" / "megafc"
    desc = json.loads((root / "dataset_description.json").read_text())
    assert {"Name", "BIDSVersion", "DatasetType", "GeneratedBy"} <= set(desc) and desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "megafc"
    assert {s["URL"] for s in desc["SourceDatasets"]} == {Path(r).resolve().as_uri() for r in tree.roots.values()}
    layout = BIDSLayout(root, validate=False)
    relmats = layout.get(extension=".tsv", suffix="relmat")
    assert len(relmats) == 16
    ents = relmats[0].get_entities()
    assert {"subject", "session", "task", "space"} <= set(ents) and ents["space"] == "MNI152NLin2009cAsym"
    assert all("stat-pearsoncorrelation_relmat.tsv" in f.filename for f in relmats)
    assert len(layout.get(extension=".tsv", suffix="timeseries")) == 16
    sidecar = json.loads(Path(relmats[0].path.replace(".tsv", ".json")).read_text())
    assert sidecar["Estimator"]["name"] == "correlation" and sidecar["Atlas"] == "custom"
    f = Path(relmats[0].path)
    assert f.parent.name == "func" and f.parent.parent.name.startswith("ses-")


def test_extraction_recovers_simulated_fc(tree, tmp_path):
    """Drug-minus-control FC from the images moves in the planted direction."""
    out = run(tree.overrides("none") + POOL + ["extraction.cache_dir=null"], tmp_path / "run")
    pairs = out.pairs
    m = pairs.groupby(["network_a", "network_b", "condition"])["fc"].mean().unstack()
    diff = m["drug"] - m[["placebo", "baseline"]].mean(axis=1)
    assert diff[("Default", "Vis")] > 0
    assert (m.loc[("Default", "Default")] > m.loc[("DorsAttn", "Vis")]).all()


@pytest.mark.slow
def test_timeseries_and_connectomes_routes_agree_with_fmriprep(tree, tmp_path):
    # meta is deterministic: the same inputs must give the same effects to the last digit
    pool = ["pooling=meta", "pooling.motion=false", "figures=false", "report=false"]
    base = run(tree.overrides("simple") + pool + ["extraction.cache_dir=null", "derivatives=all"], tmp_path / "fmriprep")
    derivs = base.run_dir / "derivatives"
    meta = pd.read_csv(tree.metadata, sep="\t", dtype=str, keep_default_na=False)
    for kind, pattern, dataset in (("timeseries", "stat-mean_timeseries.tsv", "timeseries"),
                                   ("connectomes", "relmat.tsv", "connectomes")):
        paths = []
        for row in meta.itertuples():
            hits = list((derivs / "megafc" / row.dataset / f"sub-{row.subject}").rglob(f"*ses-{row.session}_*{pattern}"))
            assert len(hits) == 1
            paths.append(str(hits[0]))
        table = meta.assign(path=paths)
        table_path = tmp_path / f"{kind}.tsv"
        table.to_csv(table_path, sep="\t", index=False)
        out = run([f"dataset={dataset}", f"dataset.metadata={table_path}", "atlas=from_labels"] + pool, tmp_path / kind)
        a = base.pairs.sort_values(["scan_id", "network_a", "network_b"]).reset_index(drop=True)
        b = out.pairs.sort_values(["scan_id", "network_a", "network_b"]).reset_index(drop=True)
        assert a["scan_id"].tolist() == b["scan_id"].tolist()
        assert np.allclose(a["fc"], b["fc"], atol=1e-4), kind
        ea, eb = base.result.effects, out.result.effects
        m = ea.merge(eb, on=["network_a", "network_b", "effect"])
        assert len(m) == len(ea)
        assert np.allclose(m.mean_x, m.mean_y, atol=1e-4) and np.allclose(m.sd_x, m.sd_y, atol=1e-4), kind
        if kind == "connectomes":
            prov = json.loads((out.run_dir / "provenance.json").read_text())
            assert "(precomputed)" in (out.run_dir / "methods.md").read_text() or prov


# -- bad inputs: each names the file, and no results are written ---------------------------------


def fresh_tree(tmp_path):
    return make_tree(tmp_path / "data", n_subjects=2, n_volumes=80)


def expect_error(overrides, run_dir, match):
    with pytest.raises(InputError, match=match):
        run(overrides + POOL + ["extraction.cache_dir=null"], run_dir)
    assert_no_results(run_dir)


def test_missing_confounds(tmp_path):
    t = fresh_tree(tmp_path)
    conf = next(t.roots["siteA"].rglob("*desc-confounds_timeseries.tsv"))
    conf.unlink()
    expect_error(t.overrides(), tmp_path / "run", f"confounds file not found: .*{conf.name}")


def test_a_path_to_a_bold_in_another_space_is_refused(tmp_path):
    """The metadata 'path' column bypasses the search by space: a space-T1w file there was
    extracted with the MNI atlas and named MNI in the derivatives, with no word said."""
    import shutil

    t = fresh_tree(tmp_path)
    bold = next(t.roots["siteA"].rglob("*space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"))
    for mni in bold.parent.glob(bold.name.split("_space-")[0] + "_space-MNI152NLin2009cAsym_*"):  # BOLD, JSON, mask
        shutil.copy(mni, mni.with_name(mni.name.replace("space-MNI152NLin2009cAsym", "space-T1w")))
    other = bold.with_name(bold.name.replace("space-MNI152NLin2009cAsym", "space-T1w"))
    meta = pd.read_csv(t.metadata, sep="\t", dtype=str, keep_default_na=False)
    meta["path"] = ""
    meta.loc[0, "path"] = str(other)
    meta.to_csv(t.metadata, sep="\t", index=False)
    expect_error(t.overrides(), tmp_path / "run",
                 r"'path' of scan .* is a BOLD in space T1w .*'dataset.space' is MNI152NLin2009cAsym")


def test_confounds_lacking_columns(tmp_path):
    t = fresh_tree(tmp_path)
    conf = next(t.roots["siteA"].rglob("*desc-confounds_timeseries.tsv"))
    pd.read_csv(conf, sep="\t").drop(columns=["global_signal"]).to_csv(conf, sep="\t", index=False, na_rep="n/a")
    expect_error(t.overrides("simple_gsr"), tmp_path / "run", f"{conf.name}.*global_signal")


def test_3d_bold(tmp_path):
    t = fresh_tree(tmp_path)
    bold = next(iter(t.bold.values()))
    img = nib.load(bold)
    nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine).to_filename(bold)
    expect_error(t.overrides(), tmp_path / "run", f"{bold.name}: expected a 4D BOLD image, got 3D")


def test_atlas_region_empty_in_image(tmp_path):
    t = fresh_tree(tmp_path)
    bold = next(iter(t.bold.values()))
    mask = bold.with_name(bold.name.replace("desc-preproc_bold", "desc-brain_mask"))
    labels = np.asarray(nib.load(t.atlas_image).dataobj)
    m = nib.load(mask)
    nib.Nifti1Image((labels != 5).astype(np.uint8), m.affine).to_filename(mask)
    expect_error(t.overrides("none"), tmp_path / "run", f"{bold.name}: atlas 'custom' region.*empty")


def test_bold_outside_the_atlas_field_of_view_is_refused_up_front(tmp_path):
    t = fresh_tree(tmp_path)
    bold = list(t.bold.values())[3]
    img = nib.load(bold)
    shifted = img.affine.copy()
    shifted[:3, 3] += [200.0, 0.0, 0.0]  # e.g. native-space BOLD against an MNI atlas
    nib.Nifti1Image(np.asarray(img.dataobj), shifted).to_filename(bold)
    expect_error(t.overrides("none"), tmp_path / "run",
                 rf"{bold.name}: only 0 of 34 region centres of atlas 'custom' lie inside.*space-MNI152NLin2009cAsym.*different spaces")


def test_atlas_centroids_are_in_world_coordinates(tmp_path):
    from megafc.plugins.atlases.custom import CustomAtlas

    t = fresh_tree(tmp_path)
    atlas = CustomAtlas(CustomAtlas.Config(image=str(t.atlas_image), labels=str(t.atlas_labels))).load()
    c = atlas.centroids()
    labels = np.asarray(nib.load(t.atlas_image).dataobj)
    vox = np.argwhere(labels == atlas.regions["index"].iloc[0]).mean(axis=0)
    assert c.shape == (34, 3) and np.allclose(c[0], vox * 3.0)  # the tree's affine is diag(3, 3, 3)


def test_header_only_metadata_with_atlas_from_labels(tmp_path):
    table = tmp_path / "meta.tsv"
    table.write_text("dataset\tsubject\tsession\tdrug\tcondition\tpath\n")
    expect_error(["dataset=timeseries", f"dataset.metadata={table}", "atlas=from_labels"], tmp_path / "run",
                 "meta.tsv: the table has a header but no rows")


def test_nan_and_constant_timeseries(tmp_path):
    t = fresh_tree(tmp_path)
    ts_dir = tmp_path / "ts"
    ts_dir.mkdir()
    meta = pd.read_csv(t.metadata, sep="\t", dtype=str, keep_default_na=False)
    labels = pd.read_csv(t.atlas_labels, sep="\t")["label"].tolist()
    rng = np.random.default_rng(0)
    paths = []
    for i, _ in enumerate(meta.itertuples()):
        p = ts_dir / f"sub-{i}_task-rest_stat-mean_timeseries.tsv"
        pd.DataFrame(rng.normal(size=(60, len(labels))), columns=labels).to_csv(p, sep="\t", index=False)
        paths.append(p.name)
    meta.assign(path=paths).to_csv(ts_dir / "meta.tsv", sep="\t", index=False)
    bad = ts_dir / paths[1]
    frame = pd.read_csv(bad, sep="\t")
    frame.iloc[3, 2] = np.nan
    frame.to_csv(bad, sep="\t", index=False)
    args = ["dataset=timeseries", f"dataset.metadata={ts_dir / 'meta.tsv'}", "atlas=from_labels"]
    expect_error(args, tmp_path / "run", f"{bad.name}: NaN.*{labels[2]}")
    frame.iloc[:, 2] = 1.0
    frame.to_csv(bad, sep="\t", index=False)
    expect_error(args, tmp_path / "run2", f"{bad.name}: constant timeseries.*{labels[2]}")
    frame = frame.astype(object)
    frame.iloc[:, 2] = rng.normal(size=len(frame))
    frame.iloc[5, 2] = "foo"  # was "ValueError: could not convert string to float", no file named
    frame.to_csv(bad, sep="\t", index=False)
    expect_error(args, tmp_path / "run3", f"{bad.name}: NaN or non-numeric values.*{labels[2]}")
    pd.DataFrame(columns=labels).to_csv(bad, sep="\t", index=False)  # a header and no rows
    expect_error(args, tmp_path / "run4", f"{bad.name}: 0 row\\(s\\) of timeseries below the header")


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.assign(path=["missing.nii.gz"] + [np.nan] * (len(m) - 1)), "points to a missing file: missing.nii.gz"),
    (lambda m: pd.concat([m, m.iloc[[0]]]), "duplicate rows"),
    (lambda m: m.assign(condition=["active"] + m["condition"].tolist()[1:]), "unknown value.*'active'"),
    (lambda m: m[m.condition == "drug"], "dataset '.*' has .* drug scan.* but no included control"),
    (lambda m: m.iloc[:0], "header but no rows"),
    (lambda m: m.assign(session_order=["first"] + ["2"] * (len(m) - 1)), "column 'session_order' has non-numeric.*first"),
    (lambda m: m.assign(mean_fd=["-0.3"] + ["0.1"] * (len(m) - 1)), r"column 'mean_fd' has negative value\(s\) at lines \[2\]"),
    (lambda m: pd.concat([m, m[["drug"]]], axis=1), r"names column\(s\) \['drug'\] more than once"),
    # a cell is named by its line in the file, as every other metadata error does
    (lambda m: m.assign(subject=[""] + m["subject"].tolist()[1:]), r"column 'subject' is empty in line\(s\) \[2\]"),
    # 'Psilocybin' beside 'psilocybin' made a drug of its own, with its own effect, silently
    (lambda m: m.assign(drug=[m["drug"].iloc[0].upper()] + m["drug"].tolist()[1:]),
     r"column 'drug' spells one name in several ways .* \(line\(s\) \[2, "),
    # blank trailing columns (a spreadsheet's export) are no columns: the table is fine, and the
    # run goes on to the next problem planted here
    (lambda m: m.assign(**{"": "", " ": ""}).assign(condition=["active"] + m["condition"].tolist()[1:]),
     "unknown value.*'active'"),
])
def test_bad_metadata(tmp_path, edit, match):
    t = fresh_tree(tmp_path)
    meta = pd.read_csv(t.metadata, sep="\t", dtype=str, keep_default_na=False)
    edit(meta).to_csv(t.metadata, sep="\t", index=False)
    expect_error(t.overrides(), tmp_path / "run", f"{t.metadata.name}.*{match}|{match}")


def test_stray_spaces_and_scans_with_neither_path_nor_root(tmp_path):
    """'psilocybin ' (a trailing space) made another drug; an empty path cell in a table whose
    dataset has no root was an internal KeyError, naming neither the line nor the column."""
    from megafc.plugins.datasets.metadata import read_metadata

    t = fresh_tree(tmp_path)
    meta = pd.read_csv(t.metadata, sep="\t", dtype=str, keep_default_na=False)
    clean = read_metadata(t.metadata)
    meta.assign(drug=meta["drug"] + " ", dataset=" " + meta["dataset"]).to_csv(t.metadata, sep="\t", index=False)
    spaced = read_metadata(t.metadata)
    assert spaced["drug"].tolist() == clean["drug"].tolist() and spaced["scan_id"].tolist() == clean["scan_id"].tolist()
    table = meta.assign(path=["some.nii.gz"] + [""] * (len(meta) - 1))
    (tmp_path / "some.nii.gz").write_text("")
    table.to_csv(tmp_path / "with_path.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"no entry in config key 'dataset.roots'.*line\(s\) \[3, 4"):
        read_metadata(tmp_path / "with_path.tsv", roots={})


def test_a_misspelt_optional_column_is_warned_about(tmp_path, caplog):
    from megafc.plugins.datasets.metadata import read_metadata

    t = fresh_tree(tmp_path)
    meta = pd.read_csv(t.metadata, sep="\t", dtype=str, keep_default_na=False)
    meta.assign(meanfd="0.1", age="30").to_csv(t.metadata, sep="\t", index=False)
    scans = read_metadata(t.metadata)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("column 'meanfd' is not one megafc reads; did you mean 'mean_fd'?" in m for m in said), said
    assert not any("'age'" in m for m in said), "a column of the user's own was warned about"
    assert "meanfd" in scans.columns
    gz = t.metadata.with_name("meta.tsv.gz")  # a gzipped table reads as the plain one
    meta.to_csv(gz, sep="\t", index=False)
    assert read_metadata(gz)[["scan_id", "condition"]].equals(read_metadata(t.metadata)[["scan_id", "condition"]])


def test_motion_qc_excludes_with_reasons(tmp_path):
    t = make_tree(tmp_path / "data", n_subjects=4, n_volumes=80)
    fds = sorted(np.nanmean(pd.read_csv(p, sep="\t", na_values="n/a")["framewise_displacement"])
                 for p in tmp_path.rglob("*desc-confounds_timeseries.tsv"))
    limit = round((fds[-1] + fds[-2]) / 2, 4)  # exclude exactly the worst scan
    out = run(t.overrides("none") + POOL + ["extraction.cache_dir=null", f"qc.max_mean_fd={limit}"], tmp_path / "run")
    scans = out.scans
    high = scans[scans["mean_fd"] > limit]
    assert len(high) == 1 and high["excluded"].all()
    assert high["exclusion_reason"].str.contains(f"mean FD > {limit}").all()
    # a scan-level model keeps its partner (a single scan still informs the subject's intercept)
    assert not scans[scans.mean_fd <= limit]["excluded"].any()
    counts = pd.read_csv(out.run_dir / "exclusions.tsv", sep="\t")
    assert counts["n_scans"].sum() == len(scans)
    # a paired model cannot use the partner: it is excluded, saying why
    paired = run(t.overrides("none") + TINY_PYMC + ["pooling=pymc_paired", "extraction.cache_dir=null",
                                               f"qc.max_mean_fd={limit}"], tmp_path / "run_paired").scans
    partners = paired[paired.excluded & (paired.mean_fd <= limit)]
    assert len(partners) == 1
    assert partners["exclusion_reason"].str.contains("no usable").all()


def test_parallel_extraction_matches_serial(tree, tmp_path):
    from megafc.core.extraction import extract_all
    from megafc.plugins.atlases.custom import CustomAtlas
    from megafc.plugins.datasets.fmriprep import FmriprepDataset

    atlas = CustomAtlas(CustomAtlas.Config(image=str(tree.atlas_image), labels=str(tree.atlas_labels))).load()
    cfg = FmriprepDataset.Config(metadata=str(tree.metadata), roots={k: str(v) for k, v in tree.roots.items()})
    inputs = FmriprepDataset(cfg).load(atlas, 0)
    ids = list(inputs.scans["scan_id"])[:6]
    serial = extract_all(inputs.images, ids, atlas, NoDenoising(), None, n_jobs=1)
    parallel = extract_all(inputs.images, ids, atlas, NoDenoising(), None, n_jobs=2)
    for s in ids:
        assert np.allclose(serial[s].timeseries, parallel[s].timeseries)


class DoubtfulDenoising(NoDenoising):
    """Warns about the subject-01 scans, as a denoiser may about a scan's confounds, and names
    every scan's file in a second warning, as libraries' messages often do."""

    def confounds(self, bold_file):
        import warnings

        if "sub-01" in bold_file:
            warnings.warn("no confounds file: nothing regressed out")
        warnings.warn(f"{Path(bold_file).name}: header has no slice timing")
        return None, None


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_warnings_raised_while_extracting_name_their_scans(tree, n_jobs, caplog, tmp_path):
    """A warning raised while a scan is extracted (here the denoiser's, in joblib's worker
    processes when n_jobs=2, where they would reach only the workers' stderr) is a warning of
    the run: once per message with the scans that raised it, at most three messages from one
    line of code (then a count), and again when the scans come from the cache."""
    from megafc.core.extraction import extract_all
    from megafc.plugins.atlases.custom import CustomAtlas
    from megafc.plugins.datasets.fmriprep import FmriprepDataset

    atlas = CustomAtlas(CustomAtlas.Config(image=str(tree.atlas_image), labels=str(tree.atlas_labels))).load()
    cfg = FmriprepDataset.Config(metadata=str(tree.metadata), roots={k: str(v) for k, v in tree.roots.items()})
    inputs = FmriprepDataset(cfg).load(atlas, 0)
    ids = list(inputs.scans["scan_id"])
    raising = sorted(s for s in ids if "sub-01" in inputs.images[s].bold)
    for attempt in ("extracted", "cached"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="megafc"):
            out = extract_all(inputs.images, ids, atlas, DoubtfulDenoising(), str(tmp_path / "cache"), n_jobs=n_jobs)
        assert all(r.cached for r in out.values()) == (attempt == "cached")
        said = [r.getMessage() for r in caplog.records]
        regressed = [m for m in said if "nothing regressed out" in m]
        assert len(regressed) == 1, said
        assert regressed[0].startswith("extraction: UserWarning at tests/test_fmriprep_route.py:")
        assert regressed[0].endswith(f"({len(raising)} of {len(ids)} scans: {', '.join(raising[:5])}"
                                     f"{', ...' * (len(raising) > 5)})")
        timing = [m for m in said if "slice timing" in m or "like the ones above" in m]
        names = {Path(inputs.images[s].bold).name for s in ids}  # the sites' files share names
        assert len(names) > 4 and len(timing) == 4
        assert timing[3].startswith(f"extraction: {len(names) - 3} more warnings at tests/test_fmriprep_route.py:")


@pytest.mark.parametrize("n_moving", [80, 60])
def test_heavily_censored_scan_is_excluded_not_fatal(tmp_path, n_moving):
    """All (80) or most (60 of 80) volumes censored by scrubbing: the scan is excluded, the run goes on."""
    t = make_tree(tmp_path / "data", n_subjects=3, n_volumes=80)
    conf = next(tmp_path.rglob("siteB/fmriprep/sub-01/ses-2/func/*desc-confounds_timeseries.tsv"))  # a drug scan
    table = pd.read_csv(conf, sep="\t", na_values="n/a")
    table.loc[table.index[-n_moving:], "framewise_displacement"] = 3.0  # large head movements
    table.to_csv(conf, sep="\t", index=False, na_rep="n/a")
    out = run(t.overrides("scrubbing") + POOL + ["extraction.cache_dir=null", "qc.max_mean_fd=null",
                                                 "qc.min_volumes=5", "qc.max_censored_fraction=1"], tmp_path / "run")
    scans = out.scans.set_index("scan_id")
    bad = scans[(scans.dataset == "siteB") & (scans.subject == "01") & (scans.condition == "drug")]
    assert len(bad) == 1 and bad["excluded"].all(), scans[["excluded", "exclusion_reason"]]
    # 80: none left (below qc.min_volumes); 60: 20 left for 36 confound regressors
    reason = "fewer than 5 volumes left after censoring" if n_moving == 80 else TOO_FEW_FOR_CONFOUNDS
    assert bad["exclusion_reason"].iloc[0] == reason
    assert not scans.drop(bad.index)["excluded"].any()
    ext = pd.read_csv(out.run_dir / "extraction.tsv", sep="\t").set_index("scan_id")
    assert ext.loc[bad.index[0], "not_extracted"] == TOO_FEW_FOR_CONFOUNDS


def test_cached_runs_do_not_reread_unchanged_images(tree, tmp_path, monkeypatch, capsys):
    """File hashes are remembered by (path, size, mtime): a rerun reads no image again; a changed file is."""
    import megafc.core.fingerprints as fingerprints
    from megafc.cli.cache import main as cache_main
    from megafc.core.extraction import extract_all
    from megafc.plugins.atlases.custom import CustomAtlas
    from megafc.plugins.datasets.fmriprep import FmriprepDataset

    atlas = CustomAtlas(CustomAtlas.Config(image=str(tree.atlas_image), labels=str(tree.atlas_labels))).load()
    cfg = FmriprepDataset.Config(metadata=str(tree.metadata), roots={k: str(v) for k, v in tree.roots.items()})
    inputs = FmriprepDataset(cfg).load(atlas, 0)
    ids = list(inputs.scans["scan_id"])[:3]
    read = []
    real = fingerprints.fingerprint_file
    monkeypatch.setattr(fingerprints, "fingerprint_file", lambda p, *a, **k: read.append(str(p)) or real(p, *a, **k))
    cache = tmp_path / "cache"
    first = extract_all(inputs.images, ids, atlas, NoDenoising(), str(cache), n_jobs=1)
    bolds = {str(Path(inputs.images[s].bold).resolve()) for s in ids}
    assert bolds <= set(read) and not any(e.cached for e in first.values())
    read.clear()
    second = extract_all(inputs.images, ids, atlas, NoDenoising(), str(cache), n_jobs=1)
    assert all(e.cached for e in second.values()) and not read, read
    changed = Path(inputs.images[ids[0]].bold)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    extract_all(inputs.images, ids, atlas, NoDenoising(), str(cache), n_jobs=1)
    assert str(changed.resolve()) in read and len(set(read) & bolds) == 1

    cache_main(["info", str(cache)])
    assert "3 cached scan extractions" in capsys.readouterr().out
    (cache / "notes.txt").write_text("mine")
    cache_main(["clear", str(cache)])
    assert "removed 3 cached scan extractions" in capsys.readouterr().out
    assert [p.name for p in cache.iterdir()] == ["notes.txt"]
    cache_main(["info", str(tmp_path / "never made")])  # before any extraction: empty, not an error
    assert "no cache yet (0 cached scan extractions" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cache_main(["clear", str(cache / "notes.txt")])
    err = capsys.readouterr().err
    assert "is not a folder" in err and "no results were written" not in err


def cache_contents(cache: Path) -> dict[str, str]:
    """Every file under a cache folder (relative path -> sha256), temporary files excluded."""
    import hashlib

    return {str(p.relative_to(cache)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(cache.rglob("*")) if p.is_file() and not p.name.startswith(".tmp-")}


@pytest.mark.slow
def test_sharded_extraction_fills_the_same_cache_as_one_job(tree, tmp_path):
    """stage=extract over 3 submitit_local tasks writes exactly the cache one job writes, and the
    following full run extracts nothing."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    single, sharded = tmp_path / "cache one job", tmp_path / "cache sharded"
    one = run(tree.overrides("simple") + POOL + ["stage=extract", f"extraction.cache_dir={single}"], tmp_path / "one")
    assert one.result is None
    assert len(pd.read_csv(one.run_dir / "extraction.tsv", sep="\t")) == 16
    assert not (one.run_dir / "effects.tsv").exists()  # no model in the extract stage
    assert len(pd.read_csv(one.run_dir / "scans.tsv", sep="\t")) == 16  # every scan, excluded or not
    sweep = tmp_path / "shards"
    proc = megafc_cli(["--multirun", "hydra/launcher=submitit_local_megafc", "stage=extract", "extraction.shards=3",
                       "extraction.shard=0,1,2", f"extraction.cache_dir={sharded}", *tree.overrides("simple"), *POOL,
                       f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_shard = [pd.read_csv(p, sep="\t") for p in sorted(sweep.glob("*/extraction.tsv"))]
    assert len(per_shard) == 3 and sorted(len(t) for t in per_shard) == [5, 5, 6]
    assert sorted(sum((list(t["scan_id"]) for t in per_shard), [])) == sorted(
        pd.read_csv(one.run_dir / "extraction.tsv", sep="\t")["scan_id"])
    assert cache_contents(sharded) == cache_contents(single) and cache_contents(single)
    full = run(tree.overrides("simple") + POOL + [f"extraction.cache_dir={sharded}"], tmp_path / "full")
    assert pd.read_csv(full.run_dir / "extraction.tsv", sep="\t")["cached"].all()


@pytest.mark.parametrize("overrides, message", [
    (["stage=extract", "extraction.cache_dir=null"], "extraction.cache_dir' is null"),
    (["stage=extract", "extraction.shards=2", "extraction.shard=2"], r"extraction.shard' is 2; expected 0 to 1"),
    (["extraction.shards=2"], "only stage=extract runs shards"),
])
def test_stage_keys_are_checked_before_loading(overrides, message, tmp_path):
    from megafc.core import ConfigError

    with pytest.raises(ConfigError, match=message):
        run(TINY + overrides, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_stage_extract_needs_images(tmp_path):
    from megafc.core import ConfigError

    with pytest.raises(ConfigError, match="nothing to extract"):
        run(TINY + ["stage=extract"], tmp_path / "run")
