"""Atlases from a TemplateFlow home (atlas.source=templateflow), offline: a fake home built here.

The home mimics TemplateFlow's layout (``tpl-<template>/`` folders with ``template_description.json``,
``_dseg.nii.gz`` label images with a ``res-`` entity and ``_dseg.tsv`` tables ``index name color``
without one; TemplateFlow's own home has no dataset_description.json). No test may reach the
network: templateflow's S3 download is replaced by a function that records the call and fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from megafc.core import ConfigError, InputError, ScanImages
from megafc.core.extraction import check_field_of_view, extract_all
from megafc.plugins.atlases import CerebellumAtlas, CombinedAtlas, SchaeferAtlas, TianAtlas
from megafc.plugins.atlases.schaefer_names import YEO17_NAMES

NLIN6, NLIN2009C = "MNI152NLin6Asym", "MNI152NLin2009cAsym"
SHAPE = (10, 12, 10)
#: 2 mm voxels, the grid centred near the MNI origin (x -10..8, y -14..8, z -8..10 mm).
AFFINE = np.array([[2.0, 0, 0, -10], [0, 2.0, 0, -14], [0, 0, 2.0, -8], [0, 0, 0, 1]])

TIAN_S1 = ["HIP-rh", "AMY-rh", "pTHA-rh", "aTHA-rh", "NAc-rh", "GP-rh", "PUT-rh", "CAU-rh",
           "HIP-lh", "AMY-lh", "pTHA-lh", "aTHA-lh", "NAc-lh", "GP-lh", "PUT-lh", "CAU-lh"]


def schaefer17_labels(n_rois: int) -> list[str]:
    """TemplateFlow-style Schaefer names, e.g. 17Networks_LH_VisCent_ExStr_1."""
    subs = list(YEO17_NAMES.values())
    return [f"17Networks_{hemi}_{subs[k % 17]}_ExStr_{k + 1}" for hemi in ("LH", "RH") for k in range(n_rois // 2)]


def label_slab(n_labels: int, x_range: tuple[int, int]) -> np.ndarray:
    """Labels 1..n_labels filling x in [x0, x1) of the grid, in contiguous runs."""
    data = np.zeros(SHAPE, dtype=np.int16)
    slab = data[x_range[0]:x_range[1]]
    slab.reshape(-1)[:] = 1 + (np.arange(slab.size) * n_labels) // slab.size
    return data


def write_atlas(home: Path, template: str, atlas: str, desc: str, labels: list[str], x_range: tuple[int, int],
                res: int = 2) -> tuple[Path, Path]:
    """One atlas in TemplateFlow's layout: res-NN image + table without res-."""
    folder = home / f"tpl-{template}"
    folder.mkdir(parents=True, exist_ok=True)
    description = folder / "template_description.json"
    if not description.exists():
        description.write_text(json.dumps({"Identifier": template, "Name": f"fake {template}"}))
    image = folder / f"tpl-{template}_res-{res:02d}_atlas-{atlas}_desc-{desc}_dseg.nii.gz"
    nib.Nifti1Image(label_slab(len(labels), x_range), AFFINE).to_filename(image)
    table = folder / f"tpl-{template}_atlas-{atlas}_desc-{desc}_dseg.tsv"
    table.write_text("index\tname\tcolor\n" + "".join(f"{i}\t{lab}\t#781283\n" for i, lab in enumerate(labels, 1)))
    return image, table


def build_home(home: Path) -> Path:
    """Schaefer 100/17 (x 0-4), Tian S1 (x 5-7) and Buckner 17 (x 8-9) in both templates."""
    for template in (NLIN2009C, NLIN6):
        write_atlas(home, template, "Schaefer2018", "100Parcels17Networks", schaefer17_labels(100), (0, 5))
        write_atlas(home, template, "Tian", "S1", TIAN_S1, (5, 8))
        write_atlas(home, template, "Buckner2011", "17Networks", [f"17Networks_{k}" for k in range(1, 18)], (8, 10))
    return home


@pytest.fixture
def s3_calls(monkeypatch, tmp_path):
    """TemplateFlow's S3 download, replaced: it records the file and fails as without network.

    ``$TEMPLATEFLOW_HOME`` points at a non-empty folder while templateflow is imported, so its
    import-time set-up touches no real home.
    """
    stub = tmp_path / "stub_home"
    stub.mkdir()
    (stub / "tpl-none").mkdir()
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(stub))
    import templateflow.client as tf_client
    import templateflow.conf._s3 as tf_s3

    calls: list[Path] = []

    def refuse(config, filepath):
        calls.append(Path(filepath))
        raise ConnectionError(f"no network in tests: would download {filepath}")

    def no_skeleton(*args, **kwargs):
        raise AssertionError("a test tried to download TemplateFlow's skeleton")

    monkeypatch.setattr(tf_client, "_s3_get", refuse)
    monkeypatch.setattr(tf_s3, "_get_skeleton_file", no_skeleton)
    return calls


@pytest.fixture
def home(tmp_path, s3_calls) -> Path:
    return build_home(tmp_path / "templateflow")


def schaefer(home: Path, **kw) -> SchaeferAtlas:
    cfg = {"source": "templateflow", "n_rois": 100, "yeo_networks": 17, "resolution_mm": 2,
           "templateflow_home": str(home), "download": False, **kw}
    return SchaeferAtlas(SchaeferAtlas.Config(**cfg))


# ---------------------------------------------------------------------------------------------
# finding the atlases


@pytest.mark.parametrize("template", [NLIN2009C, NLIN6])
def test_schaefer_from_templateflow_home(home, s3_calls, template):
    atlas = schaefer(home, template=template).load()
    assert s3_calls == []
    assert atlas.space == template
    assert Path(atlas.maps) == home / f"tpl-{template}" / f"tpl-{template}_res-02_atlas-Schaefer2018_desc-100Parcels17Networks_dseg.nii.gz"
    assert atlas.n_regions == 100 and atlas.regions["index"].tolist() == list(range(1, 101))
    first = atlas.regions.iloc[0]
    assert (first["label"], first["network"], first["subnetwork"], first["hemisphere"]) == (
        "17Networks_LH_VisCent_ExStr_1", "Vis", "VisCent", "LH")
    assert len(atlas.groups("subnetwork")) == 17
    assert f"TemplateFlow {template}" in atlas.description


def test_templateflow_home_from_the_environment(home, s3_calls, monkeypatch):
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    atlas = schaefer(home, templateflow_home=None, download=True).load()  # present files: no download
    assert Path(atlas.maps).parent == home / f"tpl-{NLIN2009C}" and s3_calls == []


def test_tian_and_cerebellum_from_templateflow_home(home, s3_calls):
    tian = TianAtlas(TianAtlas.Config(source="templateflow", template=NLIN6, scale=1, resolution_mm=2,
                                      templateflow_home=str(home))).load()
    assert tian.space == NLIN6 and tian.labels == TIAN_S1
    assert Path(tian.maps).name == f"tpl-{NLIN6}_res-02_atlas-Tian_desc-S1_dseg.nii.gz"
    assert set(tian.regions["system"]) == {"subcortical"} and "Thalamus" in tian.groups("network")
    cb = CerebellumAtlas(CerebellumAtlas.Config(source="templateflow", template=NLIN2009C, networks=17,
                                                resolution_mm=2, templateflow_home=str(home))).load()
    assert cb.space == NLIN2009C and cb.n_regions == 17
    assert cb.regions["subnetwork"].tolist()[15] == "Cerebellum-DefaultA"
    assert Path(cb.maps).name == f"tpl-{NLIN2009C}_res-02_atlas-Buckner2011_desc-17Networks_dseg.nii.gz"
    assert s3_calls == []


def test_local_files_and_nilearn_spaces(tmp_path, home):
    """Local files have no space unless atlas.space names one; nilearn's Schaefer is FSL MNI152."""
    image = home / f"tpl-{NLIN6}" / f"tpl-{NLIN6}_res-02_atlas-Tian_desc-S1_dseg.nii.gz"
    labels = image.with_name(f"tpl-{NLIN6}_atlas-Tian_desc-S1_dseg.tsv")
    assert TianAtlas(TianAtlas.Config(image=str(image), labels=str(labels))).load().space is None
    assert TianAtlas(TianAtlas.Config(image=str(image), labels=str(labels), space=NLIN6)).load().space == NLIN6

    folder = tmp_path / "nilearn" / "schaefer_2018"  # as nilearn's fetcher reads it offline
    folder.mkdir(parents=True)
    (folder / "Schaefer2018_100Parcels_17Networks_order.txt").write_text(
        "".join(f"{i}\t{lab}\t120\t18\t131\t0\n" for i, lab in enumerate(schaefer17_labels(100), 1)))
    nib.Nifti1Image(label_slab(100, (0, 5)), AFFINE).to_filename(
        folder / "Schaefer2018_100Parcels_17Networks_order_FSLMNI152_1mm.nii.gz")
    atlas = SchaeferAtlas(SchaeferAtlas.Config(n_rois=100, data_dir=str(tmp_path / "nilearn"), download=False)).load()
    assert atlas.space == NLIN6


# ---------------------------------------------------------------------------------------------
# missing files


def test_missing_files_without_download_name_paths_and_command(home, s3_calls):
    with pytest.raises(InputError) as err:
        schaefer(home, n_rois=200).load()
    msg = str(err.value)
    folder = home / f"tpl-{NLIN2009C}"
    assert str(folder / f"tpl-{NLIN2009C}_res-02_atlas-Schaefer2018_desc-200Parcels17Networks_dseg.nii.gz") in msg
    assert str(folder / f"tpl-{NLIN2009C}_atlas-Schaefer2018_desc-200Parcels17Networks_dseg.tsv") in msg
    assert f"template (space) {NLIN2009C}" in msg and "atlas.download=false" in msg
    assert (f"tf.get('{NLIN2009C}', atlas='Schaefer2018', desc='200Parcels17Networks', resolution=2, "
            "suffix='dseg', extension='.nii.gz')") in msg
    assert "atlas.templateflow_home" in msg and "TEMPLATEFLOW_HOME" in msg
    assert s3_calls == []


def test_empty_placeholder_without_download_is_named(home, s3_calls):
    image = home / f"tpl-{NLIN6}" / f"tpl-{NLIN6}_res-01_atlas-Schaefer2018_desc-100Parcels17Networks_dseg.nii.gz"
    image.write_bytes(b"")  # TemplateFlow's placeholder of a file not downloaded yet
    with pytest.raises(InputError) as err:
        schaefer(home, template=NLIN6, resolution_mm=1).load()
    msg = str(err.value)
    assert f"'{image}' (an empty placeholder, not downloaded yet)" in msg
    assert "_dseg.tsv" not in msg.split("Expected")[1].split("To provide")[0]  # the table is there
    assert s3_calls == []


def test_placeholder_with_download_tries_templateflow_and_reports_failure(home, s3_calls):
    image = home / f"tpl-{NLIN6}" / f"tpl-{NLIN6}_res-01_atlas-Schaefer2018_desc-100Parcels17Networks_dseg.nii.gz"
    image.write_bytes(b"")
    with pytest.raises(InputError) as err:
        schaefer(home, template=NLIN6, resolution_mm=1, download=True).load()
    assert s3_calls == [image]
    msg = str(err.value)
    assert "downloading them from TemplateFlow failed (ConnectionError: no network in tests" in msg
    assert str(image) in msg


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_missing_or_empty_home_is_not_populated(tmp_path, s3_calls, state):
    root = tmp_path / "tf_home"
    if state == "empty":
        root.mkdir()
    with pytest.raises(InputError) as err:
        schaefer(root).load()
    msg = str(err.value)
    assert f"the folder is {state}" in msg
    assert str(root / f"tpl-{NLIN2009C}" / f"tpl-{NLIN2009C}_atlas-Schaefer2018_desc-100Parcels17Networks_dseg.tsv") in msg
    assert (not root.exists()) if state == "missing" else list(root.iterdir()) == []
    assert s3_calls == []


def test_tian_not_in_templateflow_says_which_files_to_copy(home, s3_calls):
    with pytest.raises(InputError) as err:
        TianAtlas(TianAtlas.Config(source="templateflow", template=NLIN6, scale=2,
                                   templateflow_home=str(home))).load()
    msg = str(err.value)
    assert "TemplateFlow does not distribute this atlas" in msg and "copy the files" in msg
    assert str(home / f"tpl-{NLIN6}" / f"tpl-{NLIN6}_res-01_atlas-Tian_desc-S2_dseg.nii.gz") in msg
    assert str(home / f"tpl-{NLIN6}" / f"tpl-{NLIN6}_atlas-Tian_desc-S2_dseg.tsv") in msg
    assert "tf.get" not in msg and s3_calls == []


def test_image_and_table_must_agree(home):
    table = home / f"tpl-{NLIN6}" / f"tpl-{NLIN6}_atlas-Tian_desc-S1_dseg.tsv"
    table.write_text("\n".join(table.read_text().splitlines()[:-1]) + "\n")  # drop label 16
    with pytest.raises(InputError, match=r"value\(s\) \[16\] that its label file does not name"):
        TianAtlas(TianAtlas.Config(source="templateflow", template=NLIN6, resolution_mm=2,
                                   templateflow_home=str(home))).load()


# ---------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize("cls", [SchaeferAtlas, TianAtlas, CerebellumAtlas])
def test_source_and_template_are_validated(cls):
    with pytest.raises(ConfigError, match=r"config key 'atlas.source' is 'web'; expected one of \[.*'templateflow'\]"):
        cls(cls.Config(source="web"))
    with pytest.raises(ConfigError, match=r"config key 'atlas.template' is 'MNI305'; expected one of "
                                          r"\['MNI152NLin2009cAsym', 'MNI152NLin6Asym'\]"):
        cls(cls.Config(source="templateflow", template="MNI305"))


def test_templateflow_needs_no_image_but_files_still_do():
    TianAtlas(TianAtlas.Config(source="templateflow"))
    CerebellumAtlas(CerebellumAtlas.Config(source="templateflow"))
    with pytest.raises(ConfigError, match="config key 'atlas.image' is not set"):
        TianAtlas(TianAtlas.Config(source="files"))
    with pytest.raises(ConfigError, match="atlas.scale"):
        TianAtlas(TianAtlas.Config(source="templateflow", scale=5))
    with pytest.raises(ConfigError, match="atlas.networks"):
        CerebellumAtlas(CerebellumAtlas.Config(source="templateflow", networks=12))
    with pytest.raises(ConfigError, match="atlas.space"):
        TianAtlas(TianAtlas.Config(source="templateflow", template=NLIN6, space=NLIN2009C))


def test_importing_the_plugins_does_not_import_templateflow():
    code = "import sys, megafc.plugins.atlases; print(sorted(m for m in sys.modules if m.startswith('templateflow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# spaces: extraction and combined


def bold(tmp_path: Path, space: str | None, entity: str | None = None) -> ScanImages:
    name = f"sub-01_task-rest{f'_space-{space}' if space else ''}_desc-preproc_bold.nii.gz"
    path = tmp_path / "func" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.ones(SHAPE + (3,), dtype=np.float32), AFFINE).to_filename(path)
    return ScanImages(bold=str(path), t_r=2.0, entities={"sub": "01", "space": entity or space or ""})


def test_bold_in_another_space_is_refused_before_extraction(tmp_path, home, caplog):
    atlas = schaefer(home, template=NLIN6).load()
    images = {"a": bold(tmp_path, NLIN2009C)}
    cache = tmp_path / "cache"
    with pytest.raises(InputError) as err:
        extract_all(images, ["a"], atlas, denoiser=None, cache_dir=str(cache))  # no denoiser: never reached
    msg = str(err.value)
    assert images["a"].bold in msg and "atlas 'schaefer'" in msg
    assert f"space {NLIN2009C}" in msg and f"space {NLIN6}" in msg
    assert f"--output-spaces {NLIN6}" in msg and f"atlas.template={NLIN2009C}" in msg
    assert "extraction.space_mismatch=warn" in msg
    assert not cache.exists()
    # the space entity counts when the file name has none
    with pytest.raises(InputError, match=f"space {NLIN2009C} but atlas 'schaefer' is in space {NLIN6}"):
        check_field_of_view({"b": bold(tmp_path / "b", None, entity=NLIN2009C)}, ["b"], atlas)
    # same space, or unknown on either side: only the field-of-view check, which passes here
    check_field_of_view({"c": bold(tmp_path / "c", NLIN6)}, ["c"], atlas)
    check_field_of_view({"d": bold(tmp_path / "d", None)}, ["d"], atlas)
    # a user who accepts the few-mm difference says so, and the log says it happened
    with caplog.at_level("WARNING", logger="megafc"):
        check_field_of_view(images, ["a"], atlas, space_mismatch="warn")
    assert f"BOLD in space {NLIN2009C}, atlas 'schaefer' in space {NLIN6}" in caplog.text
    atlas.space = None
    check_field_of_view(images, ["a"], atlas)


def combined(home: Path, tmp_path: Path, cortical: str, subcortical: str) -> CombinedAtlas:
    part = {"source": "templateflow", "resolution_mm": 2, "templateflow_home": str(home)}
    return CombinedAtlas(CombinedAtlas.Config(
        cortical={"name": "schaefer", "n_rois": 100, "download": False, "template": cortical, **part},
        subcortical={"name": "tian", "template": subcortical, **part},
        cache_dir=str(tmp_path / "cache"),
    ))


def test_combined_templateflow_parts_in_one_space(tmp_path, home, s3_calls):
    atlas = combined(home, tmp_path, NLIN6, NLIN6).load()
    assert atlas.space == NLIN6
    assert atlas.n_regions == 116 and atlas.regions["index"].tolist() == list(range(1, 117))
    assert atlas.regions["part"].tolist() == ["cortical"] * 100 + ["subcortical"] * 16
    assert s3_calls == []


def test_combined_parts_in_two_spaces_are_refused(tmp_path, home):
    with pytest.raises(InputError) as err:
        combined(home, tmp_path, NLIN2009C, NLIN6).load()
    msg = str(err.value)
    assert "part 'subcortical' (tian) is in space MNI152NLin6Asym" in msg
    assert "part 'cortical' (schaefer) is in space MNI152NLin2009cAsym" in msg
    assert not (tmp_path / "cache").exists()


def test_combined_missing_part_names_the_part_keys(tmp_path, home):
    (home / f"tpl-{NLIN6}" / f"tpl-{NLIN6}_atlas-Tian_desc-S1_dseg.tsv").unlink()
    with pytest.raises(InputError) as err:
        combined(home, tmp_path, NLIN6, NLIN6).load()
    msg = str(err.value)
    assert f"tpl-{NLIN6}_atlas-Tian_desc-S1_dseg.tsv" in msg and "atlas.subcortical.templateflow_home" in msg


def test_files_added_after_a_failed_load_are_found(home, s3_calls):
    """The home's index is reused between loads, but not once files were added."""
    cfg = TianAtlas.Config(source="templateflow", template=NLIN6, scale=2, resolution_mm=2, templateflow_home=str(home))
    with pytest.raises(InputError, match="atlas-Tian_desc-S2"):
        TianAtlas(cfg).load()
    write_atlas(home, NLIN6, "Tian", "S2", TIAN_S1, (5, 8))  # S1's names stand in for S2's
    assert TianAtlas(cfg).load().n_regions == 16
