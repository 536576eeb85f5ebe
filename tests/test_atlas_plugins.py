"""Real-atlas plugins, offline: small fake atlas files laid out where nilearn's fetchers look."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from megafc.core import ConfigError, InputError
from megafc.core.registry import default_registry
from megafc.plugins.atlases import (
    CerebellumAtlas,
    CombinedAtlas,
    DosenbachAtlas,
    PowerAtlas,
    SchaeferAtlas,
    SeitzmanAtlas,
    TianAtlas,
    YeoAtlas,
)
from megafc.plugins.atlases._files import read_label_file
from megafc.plugins.atlases.schaefer import fetched_labels
from megafc.plugins.atlases.schaefer_names import parse_subcortical_label
from megafc.plugins.atlases.yeo import YEO_FILES

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (10, 10, 10)

# ---------------------------------------------------------------------------------------------
# fake atlas files


def label_slab(n_labels: int, x_range: tuple[int, int], shape=SHAPE) -> np.ndarray:
    """Labels 1..n_labels filling x in [x0, x1) of the grid, in contiguous runs."""
    data = np.zeros(shape, dtype=np.int32)
    slab = data[x_range[0]:x_range[1]]
    n = slab.size
    assert n >= n_labels
    slab.reshape(-1)[:] = 1 + (np.arange(n) * n_labels) // n
    return data


def save(data: np.ndarray, path: Path, affine=AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def schaefer_labels(n_rois: int, n_networks: int) -> list[str]:
    subs = (["Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"] if n_networks == 7 else
            ["VisCent", "VisPeri", "SomMotA", "SomMotB", "DorsAttnA", "DorsAttnB", "SalVentAttnA",
             "SalVentAttnB", "LimbicB_OFC", "LimbicA_TempPole", "ContA", "ContB", "ContC", "DefaultA",
             "DefaultB", "DefaultC", "TempPar"])
    labels = []
    for hemi in ("LH", "RH"):
        for k in range(n_rois // 2):
            labels.append(f"{n_networks}Networks_{hemi}_{subs[k % len(subs)]}_{k + 1}")
    return labels


def write_schaefer(data_dir: Path, n_rois=100, n_networks=7, res=1, image=True, x_range=(0, 10)) -> list[str]:
    """Files as nilearn's fetch_atlas_schaefer_2018 expects them in <data_dir>/schaefer_2018/."""
    folder = data_dir / "schaefer_2018"
    folder.mkdir(parents=True, exist_ok=True)
    labels = schaefer_labels(n_rois, n_networks)
    # the real *_order.txt: "<value>\t<label>\t<r>\t<g>\t<b>\t0", no header
    (folder / f"Schaefer2018_{n_rois}Parcels_{n_networks}Networks_order.txt").write_text(
        "".join(f"{i}\t{lab}\t120\t18\t131\t0\n" for i, lab in enumerate(labels, start=1))
    )
    if image:
        save(label_slab(n_rois, x_range),
             folder / f"Schaefer2018_{n_rois}Parcels_{n_networks}Networks_order_FSLMNI152_{res}mm.nii.gz")
    return labels


def write_yeo(data_dir: Path) -> None:
    """All seven files fetch_atlas_yeo_2011 requires in <data_dir>/yeo_2011/Yeo_JNeurophysiol11_MNI152/."""
    base = data_dir / "yeo_2011"
    for rel in YEO_FILES:
        path = base / rel
        if rel.endswith("ColorLUT.txt"):
            n = 17 if "17Networks" in rel else 7
            # the real colour tables: a "0 NONE" line (read as header by nilearn), then one line
            # per network "<k> <n>Networks_<k> r g b 0", space-aligned
            lines = [f"{0:>3}     {'NONE':<30}{0:>4}{0:>5}{0:>5}{0:>4}"]
            lines += [f"{k:>3}     {f'{n}Networks_{k}':<30}{120:>4}{18:>5}{134:>5}{0:>4}" for k in range(1, n + 1)]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
        elif "Networks" in rel:
            n = 17 if "17Networks" in rel else 7
            save(label_slab(n, (0, 10))[..., None].astype(np.uint8), path)  # 4D (x, y, z, 1) as Yeo's
        else:
            save(np.zeros((*SHAPE, 1), dtype=np.uint8), path)


TIAN_S1 = ["HIP-rh", "AMY-rh", "pTHA-rh", "aTHA-rh", "NAc-rh", "GP-rh", "PUT-rh", "CAU-rh",
           "HIP-lh", "AMY-lh", "pTHA-lh", "aTHA-lh", "NAc-lh", "GP-lh", "PUT-lh", "CAU-lh"]


def write_tian(folder: Path, labels=TIAN_S1, x_range=(5, 8), fine=True) -> tuple[Path, Path]:
    """A Tian-style atlas: image on a 1 mm grid (if ``fine``) covering the 2 mm grid, label file
    with one label per line (as Tian_Subcortex_S1_3T_label.txt)."""
    coarse = label_slab(len(labels), x_range)
    if fine:
        data = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)  # same space, 1 mm voxels
        image = save(data, folder / "Tian_Subcortex_S1_3T.nii", affine=np.eye(4))
    else:
        image = save(coarse, folder / "Tian_Subcortex_S1_3T.nii")
    label_file = folder / "Tian_Subcortex_S1_3T_label.txt"
    label_file.write_text("\n".join(labels) + "\n")
    return image, label_file


def write_buckner(folder: Path, n=7, x_range=(8, 10)) -> tuple[Path, Path]:
    """A Buckner-2011-style cerebellar atlas with its FreeSurfer colour table."""
    image = save(label_slab(n, x_range), folder / f"Buckner2011_{n}Networks_MNI152_FreeSurferConformed1mm_TightMask.nii.gz")
    lut = folder / f"Buckner2011_{n}Networks_ColorLUT.txt"
    lut.write_text("0 NONE 0 0 0 0\n" + "".join(f"{k} {n}Networks_{k} 120 18 134 0\n" for k in range(1, n + 1)))
    return image, lut


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt of nilearn to download fails at once, as it does without network."""
    import requests

    import nilearn.datasets._utils as nl_utils

    calls = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise requests.exceptions.ConnectionError(f"Failed to resolve host for {url}")

    monkeypatch.setattr(nl_utils, "fetch_single_file", refuse)
    return calls


# ---------------------------------------------------------------------------------------------
# schaefer


@pytest.mark.parametrize("n_networks", [7, 17])
def test_schaefer_loads_offline_from_data_dir(tmp_path, no_download, n_networks):
    labels = write_schaefer(tmp_path, n_rois=100, n_networks=n_networks)
    atlas = SchaeferAtlas(SchaeferAtlas.Config(n_rois=100, yeo_networks=n_networks, data_dir=str(tmp_path))).load()
    assert no_download == []
    assert atlas.n_regions == 100
    assert atlas.labels == labels
    assert atlas.regions["index"].tolist() == list(range(1, 101))
    assert Path(atlas.maps).name == f"Schaefer2018_100Parcels_{n_networks}Networks_order_FSLMNI152_1mm.nii.gz"
    assert any("Schaefer" in r and "Cereb Cortex 28:3095-3114" in r for r in atlas.references)
    assert atlas.description
    first = atlas.regions.iloc[0]
    if n_networks == 7:
        assert (first["network"], first["subnetwork"], first["system"], first["hemisphere"]) == ("Vis", "Vis", "unimodal", "LH")
        assert set(atlas.groups("network")) == {"Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"}
    else:
        assert (first["network"], first["subnetwork"]) == ("Vis", "VisCent")
        row = atlas.regions.set_index("label").loc["17Networks_LH_TempPar_17"]
        assert (row["network"], row["subnetwork"], row["system"]) == ("Default", "TempPar", "transmodal")
        assert len(atlas.groups("subnetwork")) == 17
    assert set(atlas.regions["system"]) == {"unimodal", "attention", "transmodal"}


def test_schaefer_missing_files_name_folder_and_files(tmp_path, no_download):
    data_dir = tmp_path / "atlases"
    with pytest.raises(InputError) as err:
        SchaeferAtlas(SchaeferAtlas.Config(n_rois=200, yeo_networks=17, data_dir=str(data_dir))).load()
    msg = str(err.value)
    assert str(data_dir / "schaefer_2018") in msg
    assert "Schaefer2018_200Parcels_17Networks_order.txt" in msg
    assert "Schaefer2018_200Parcels_17Networks_order_FSLMNI152_1mm.nii.gz" in msg
    assert "downloading them failed" in msg and "atlas.data_dir" in msg
    assert no_download, "nilearn should have tried to download"
    assert not data_dir.exists(), "a failed fetch must not leave empty folders behind"


def test_schaefer_lists_only_the_missing_file_and_can_skip_download(tmp_path, no_download):
    write_schaefer(tmp_path, image=False)
    with pytest.raises(InputError) as err:
        SchaeferAtlas(SchaeferAtlas.Config(n_rois=100, yeo_networks=7, data_dir=str(tmp_path), download=False)).load()
    msg = str(err.value)
    assert "Schaefer2018_100Parcels_7Networks_order_FSLMNI152_1mm.nii.gz" in msg
    assert "Networks_order.txt" not in msg
    assert "atlas.download=false" in msg
    assert no_download == []
    assert (tmp_path / "schaefer_2018" / "Schaefer2018_100Parcels_7Networks_order.txt").exists()


def test_schaefer_image_and_labels_must_agree(tmp_path, no_download):
    write_schaefer(tmp_path)
    img = tmp_path / "schaefer_2018" / "Schaefer2018_100Parcels_7Networks_order_FSLMNI152_1mm.nii.gz"
    data = np.asanyarray(nib.load(str(img)).dataobj).copy()
    data[data == 7] = 0
    save(data, img)
    with pytest.raises(InputError, match=r"value\(s\) \[7\] have no voxels"):
        SchaeferAtlas(SchaeferAtlas.Config(n_rois=100, yeo_networks=7, data_dir=str(tmp_path))).load()


@pytest.mark.parametrize("key,value", [("n_rois", 150), ("yeo_networks", 12), ("resolution_mm", 3)])
def test_schaefer_config_is_validated(key, value):
    with pytest.raises(ConfigError, match=rf"config key 'atlas.{key}' is {value}; expected one of"):
        SchaeferAtlas(SchaeferAtlas.Config(**{key: value}))


def test_fetched_labels_accepts_bytes_and_background():
    from sklearn.utils import Bunch

    old_style = Bunch(maps="x.nii.gz", labels=[b"Background", b"7Networks_LH_Vis_1", b"7Networks_RH_Vis_1"])
    assert fetched_labels(old_style, "t") == [(1, "7Networks_LH_Vis_1"), (2, "7Networks_RH_Vis_1")]
    no_background = Bunch(maps="x.nii.gz", labels=[b"7Networks_LH_Vis_1"])
    assert fetched_labels(no_background, "t") == [(1, "7Networks_LH_Vis_1")]
    lut = pd.DataFrame({"index": [0, 1, 2], "name": ["Background", "a", "b"]})
    assert fetched_labels(Bunch(maps="x", labels=["Background", "a", "b"], lut=lut), "t") == [(1, "a"), (2, "b")]


# ---------------------------------------------------------------------------------------------
# yeo


def test_yeo7_loads_offline_with_schaefer_names(tmp_path, no_download):
    write_yeo(tmp_path)
    atlas = YeoAtlas(YeoAtlas.Config(n_networks=7, data_dir=str(tmp_path))).load()
    assert no_download == []
    assert atlas.labels == [f"Yeo7_{n}" for n in ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")]
    assert atlas.regions["index"].tolist() == list(range(1, 8))
    assert atlas.regions["system"].tolist() == ["unimodal"] * 2 + ["attention"] * 2 + ["transmodal"] * 3
    assert Path(atlas.maps).name == "Yeo2011_7Networks_MNI152_FreeSurferConformed1mm_LiberalMask.nii.gz"  # thick
    assert "J Neurophysiol 106:1125-1165" in atlas.references[0]


def test_yeo17_maps_to_schaefer17_names(tmp_path, no_download):
    write_yeo(tmp_path)
    atlas = YeoAtlas(YeoAtlas.Config(n_networks=17, thickness="thin", data_dir=str(tmp_path))).load()
    r = atlas.regions.set_index("index")
    assert r.loc[1, "subnetwork"] == "VisCent" and r.loc[2, "subnetwork"] == "VisPeri"
    assert r.loc[[9, 10], "subnetwork"].tolist() == ["LimbicA", "LimbicB"]
    assert r.loc[[11, 12, 13], "subnetwork"].tolist() == ["ContC", "ContA", "ContB"]
    assert r.loc[[14, 15, 16, 17], "subnetwork"].tolist() == ["TempPar", "DefaultC", "DefaultA", "DefaultB"]
    assert r.loc[14, "network"] == "Default"
    assert sorted(r["subnetwork"]) == sorted(set(r["subnetwork"]))  # 17 distinct
    assert Path(atlas.maps).name == "Yeo2011_17Networks_MNI152_FreeSurferConformed1mm.nii.gz"


def test_yeo_needs_all_seven_files(tmp_path, no_download):
    write_yeo(tmp_path)
    (tmp_path / "yeo_2011" / YEO_FILES[-1]).unlink()  # the anatomy image, unused but required by nilearn
    with pytest.raises(InputError, match="FSL_MNI152_FreeSurferConformed_1mm.nii.gz") as err:
        YeoAtlas(YeoAtlas.Config(data_dir=str(tmp_path))).load()
    assert str(tmp_path / "yeo_2011") in str(err.value)
    assert (tmp_path / "yeo_2011" / YEO_FILES[0]).exists(), "existing files must be left alone"


# ---------------------------------------------------------------------------------------------
# tian (Melbourne subcortex)

TIAN_CASES = [
    # S1
    ("HIP-rh", "Hippocampus", "RH"), ("AMY-lh", "Amygdala", "LH"), ("pTHA-rh", "Thalamus", "RH"),
    ("aTHA-lh", "Thalamus", "LH"), ("NAc-rh", "Accumbens", "RH"), ("GP-lh", "Pallidum", "LH"),
    ("PUT-rh", "Putamen", "RH"), ("CAU-lh", "Caudate", "LH"),
    # S2
    ("aHIP-rh", "Hippocampus", "RH"), ("pHIP-lh", "Hippocampus", "LH"), ("lAMY-rh", "Amygdala", "RH"),
    ("mAMY-lh", "Amygdala", "LH"), ("THA-DP-rh", "Thalamus", "RH"), ("THA-DA-rh", "Thalamus", "RH"),
    ("NAc-shell-lh", "Accumbens", "LH"), ("NAc-core-rh", "Accumbens", "RH"), ("pGP-rh", "Pallidum", "RH"),
    ("aGP-lh", "Pallidum", "LH"), ("aPUT-rh", "Putamen", "RH"), ("pPUT-lh", "Putamen", "LH"),
    ("aCAU-rh", "Caudate", "RH"), ("pCAU-lh", "Caudate", "LH"),
    # S3
    ("HIP-head-rh", "Hippocampus", "RH"), ("HIP-body-lh", "Hippocampus", "LH"), ("HIP-tail-rh", "Hippocampus", "RH"),
    ("THA-VPm-lh", "Thalamus", "LH"), ("THA-DAl-rh", "Thalamus", "RH"), ("PUT-VA-rh", "Putamen", "RH"),
    ("PUT-DP-lh", "Putamen", "LH"), ("CAU-VA-rh", "Caudate", "RH"), ("CAU-body-lh", "Caudate", "LH"),
    ("CAU-tail-lh", "Caudate", "LH"),
    # S4
    ("HIP-head-m1-rh", "Hippocampus", "RH"), ("HIP-head-l-lh", "Hippocampus", "LH"), ("AMY-SM-rh", "Amygdala", "RH"),
    ("AMY-CL-lh", "Amygdala", "LH"), ("THA-VAip-rh", "Thalamus", "RH"), ("THA-VAs-lh", "Thalamus", "LH"),
]


@pytest.mark.parametrize("label,structure,hemi", TIAN_CASES)
def test_tian_labels_of_all_scales(label, structure, hemi):
    r = parse_subcortical_label(label)
    assert (r["network"], r["subnetwork"], r["system"], r["hemisphere"]) == (structure, structure, "subcortical", hemi)


@pytest.mark.parametrize("label", ["HIP", "CAU-xx", "xCAU-lh", "Thalamus-lh", "Cerebellum_LH_1", "-lh", "PUTA-rh"])
def test_non_tian_labels_are_refused(label):
    with pytest.raises(InputError, match="not a Tian subcortical name"):
        parse_subcortical_label(label)


def test_tian_atlas_loads_in_label_order(tmp_path):
    image, labels = write_tian(tmp_path, fine=False)
    atlas = TianAtlas(TianAtlas.Config(image=str(image), labels=str(labels))).load()
    assert atlas.labels == TIAN_S1
    assert atlas.regions["index"].tolist() == list(range(1, 17))
    assert atlas.groups("network") == ["Hippocampus", "Amygdala", "Thalamus", "Accumbens", "Pallidum", "Putamen", "Caudate"]
    assert set(atlas.regions["system"]) == {"subcortical"}
    assert "Nat Neurosci 23:1421-1432" in atlas.references[0]


def test_tian_needs_its_files(tmp_path):
    with pytest.raises(ConfigError, match="config key 'atlas.image' is not set"):
        TianAtlas()
    image, labels = write_tian(tmp_path, fine=False)
    with pytest.raises(InputError, match="atlas.labels"):
        TianAtlas(TianAtlas.Config(image=str(image), labels=str(tmp_path / "nope.txt"))).load()
    labels.write_text("\n".join(TIAN_S1[:15]) + "\n")  # one label short of the image
    with pytest.raises(InputError, match=r"value\(s\) \[16\] that its label file does not name"):
        TianAtlas(TianAtlas.Config(image=str(image), labels=str(labels))).load()


# ---------------------------------------------------------------------------------------------
# cerebellum and label files


@pytest.mark.parametrize("n", [7, 17])
def test_cerebellum_buckner_colour_table(tmp_path, n):
    image, lut = write_buckner(tmp_path, n=n, x_range=(0, 10))
    atlas = CerebellumAtlas(CerebellumAtlas.Config(image=str(image), labels=str(lut))).load()
    assert atlas.regions["index"].tolist() == list(range(1, n + 1))
    assert set(atlas.regions["network"]) == {"Cerebellum"} and set(atlas.regions["system"]) == {"cerebellar"}
    subs = atlas.regions["subnetwork"].tolist()
    if n == 7:
        assert subs == ["Cerebellum-" + s for s in ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")]
    else:
        assert subs[15] == "Cerebellum-DefaultA" and subs[10] == "Cerebellum-ContC"
    assert "J Neurophysiol 106:2322-2345" in atlas.references[0]


def test_cerebellum_tsv_and_plain_labels(tmp_path):
    image = save(label_slab(3, (0, 10)), tmp_path / "cb.nii.gz")
    tsv = tmp_path / "cb.tsv"
    tsv.write_text("index\tlabel\n3\tLobule_IX\n1\tLobule_VI\n2\tCrus_I\n")
    atlas = CerebellumAtlas(CerebellumAtlas.Config(image=str(image), labels=str(tsv), references=["Me (2024)"])).load()
    assert atlas.labels == ["Cerebellum-Lobule_VI", "Cerebellum-Crus_I", "Cerebellum-Lobule_IX"]
    assert atlas.references == ["Me (2024)"]
    with pytest.raises(ConfigError, match="config key 'atlas.labels' is not set"):
        CerebellumAtlas(CerebellumAtlas.Config(image=str(image)))


def test_label_file_formats(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text("Background\nA\nB\n")
    assert read_label_file(f, "t") == [(1, "A"), (2, "B")]
    f.write_text("# comment\nA\n\nB\n")
    assert read_label_file(f, "t") == [(1, "A"), (2, "B")]
    f.write_text("  0   NONE   0 0 0 0\n  2   B   1 2 3 0\n  1   A   1 2 3 0\n")
    assert read_label_file(f, "t") == [(1, "A"), (2, "B")]
    f.write_text("index,label\n1,A\n")
    assert read_label_file(f, "t") == [(1, "A")]
    f.write_text("name\tindex\nA\t5\n")
    assert read_label_file(f, "t") == [(5, "A")]
    f.write_text("1 A\n1 B\n")
    with pytest.raises(InputError, match="more than once"):
        read_label_file(f, "t")
    f.write_text("1 A\nB\n")
    with pytest.raises(InputError, match="neither one label per line"):
        read_label_file(f, "t")


# ---------------------------------------------------------------------------------------------
# combined


def combined_config(tmp_path, **kw):
    data_dir = tmp_path / "nilearn"
    write_schaefer(data_dir, n_rois=100, n_networks=17, x_range=(0, 5))
    image, labels = write_tian(tmp_path / "tian", x_range=kw.pop("tian_x", (5, 8)))
    cb_image, cb_lut = write_buckner(tmp_path / "buckner", n=7, x_range=(8, 10))
    return CombinedAtlas.Config(
        cortical={"name": "schaefer", "n_rois": 100, "yeo_networks": 17, "data_dir": str(data_dir)},
        subcortical={"name": "tian", "image": str(image), "labels": str(labels)},
        cerebellar={"name": "cerebellum", "image": str(cb_image), "labels": str(cb_lut)},
        cache_dir=str(tmp_path / "cache"), **kw,
    )


def test_combined_merges_parts_without_collisions(tmp_path, no_download):
    atlas = CombinedAtlas(combined_config(tmp_path)).load()
    assert atlas.n_regions == 100 + 16 + 7
    assert atlas.regions["index"].tolist() == list(range(1, 124))  # tian resampled from 1 mm, shifted by 100
    assert atlas.regions["part"].tolist() == ["cortical"] * 100 + ["subcortical"] * 16 + ["cerebellar"] * 7
    assert atlas.regions.loc[100, "label"] == "HIP-rh" and atlas.regions.loc[116, "label"] == "Cerebellum-Vis"
    assert {"unimodal", "attention", "transmodal", "subcortical", "cerebellar"} == set(atlas.regions["system"])
    img = nib.load(atlas.maps)
    data = np.asanyarray(img.dataobj)
    assert data.shape == SHAPE and np.allclose(img.affine, AFFINE)
    assert sorted(set(np.unique(data).tolist()) - {0}) == atlas.regions["index"].tolist()
    assert Path(atlas.maps).parent == tmp_path / "cache" and Path(atlas.maps).name.startswith("combined_")
    assert Path(atlas.maps).with_suffix("").with_suffix(".tsv").exists()
    assert len(atlas.references) == 4  # Schaefer, Yeo, Tian, Buckner
    again = CombinedAtlas(combined_config(tmp_path)).load()
    assert again.maps == atlas.maps  # same content, same cached file


def test_combined_refuses_overlap_or_keeps_first(tmp_path, no_download, caplog):
    cfg = combined_config(tmp_path, tian_x=(3, 8))  # the subcortex overlaps cortex at x = 3, 4
    with pytest.raises(InputError) as err:
        CombinedAtlas(cfg).load()
    msg = str(err.value)
    assert "'subcortical' (tian)" in msg and "'cortical' (schaefer)" in msg and "atlas.overlap=first" in msg
    cfg.overlap = "first"
    with caplog.at_level("WARNING", logger="megafc"):  # the run's warnings (warnings.tsv), not Python's
        atlas = CombinedAtlas(cfg).load()
    assert re.search(r"\d+ region\(s\) have no voxels left in the merged image \(atlas.overlap=first\)", caplog.text)
    assert re.search(r"\d+ region\(s\) dropped, with no voxels left where parts overlap \(\d+ of part 'subcortical'\)",
                     atlas.description)  # and methods.md, which says what the atlas is
    data = np.asanyarray(nib.load(atlas.maps).dataobj)
    assert sorted(set(np.unique(data).tolist()) - {0}) == atlas.regions["index"].tolist()
    assert (data[3:5] <= 100).all()  # cortex kept its voxels
    assert 100 < atlas.n_regions < 123


def test_combined_reports_missing_part_files_with_part_keys(tmp_path, no_download):
    cfg = combined_config(tmp_path)
    cfg.cortical = {"name": "schaefer", "n_rois": 300, "data_dir": str(tmp_path / "nilearn")}
    with pytest.raises(InputError) as err:
        CombinedAtlas(cfg).load()
    msg = str(err.value)
    assert "Schaefer2018_300Parcels_17Networks_order.txt" in msg
    assert "atlas.cortical.data_dir=<dir>" in msg and str(tmp_path / "nilearn" / "schaefer_2018") in msg


def test_combined_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="at least two parts"):
        CombinedAtlas()
    with pytest.raises(ConfigError, match="config key 'atlas.cortical.n_rois' is 150"):
        CombinedAtlas(CombinedAtlas.Config(cortical={"name": "schaefer", "n_rois": 150}, subcortical={"name": "yeo"}))
    with pytest.raises(ConfigError, match="atlas.subcortical.name"):
        CombinedAtlas(CombinedAtlas.Config(subcortical={"name": "nonesuch"}))
    with pytest.raises(ConfigError, match="atlas.overlap"):
        CombinedAtlas(CombinedAtlas.Config(overlap="last"))
    with pytest.raises(ConfigError, match="no label image"):
        CombinedAtlas(CombinedAtlas.Config(subcortical={"name": "dosenbach"}, cortical={"name": "seitzman"})).load()


def test_combined_parts_come_from_the_same_registry(tmp_path, no_download):
    """A registry built with extra plugins (a third party's atlas) builds the combined atlas's
    parts too, not only the installed ones."""
    import types

    from megafc.core import hookimpl
    from megafc.core.registry import build_registry
    from megafc.plugins.atlases.tian import TianAtlas

    class LabTian(TianAtlas):
        """A lab's own subcortical atlas (here: Tian's files under another name)."""

        name = "lab_subcortex"

    extra = types.ModuleType("lab_plugin")
    extra.megafc_atlases = hookimpl(lambda: [LabTian])
    cfg = combined_config(tmp_path)
    sub = {**cfg.subcortical, "name": "lab_subcortex"}
    node = {"name": "combined", "cortical": cfg.cortical, "subcortical": sub, "cerebellar": cfg.cerebellar,
            "cache_dir": cfg.cache_dir}
    with pytest.raises(ConfigError, match="no atlas plugin named 'lab_subcortex'"):
        default_registry().instantiate("atlas", node)
    atlas = build_registry(extra_plugins=[extra]).instantiate("atlas", node)
    assert [type(p).__name__ for _, p in atlas.parts] == ["SchaeferAtlas", "LabTian", "CerebellumAtlas"]
    assert atlas.load().n_regions == 100 + 16 + 7


def test_combined_parts_from_the_command_line():
    """Nested plugin configs go through Hydra: `megafc atlas=combined atlas.subcortical={...}`."""
    from conftest import compose

    cfg = compose(["atlas=combined", "atlas.cortical.n_rois=200",
                   "atlas.subcortical={name: tian, image: /a/t.nii, labels: /a/t.txt}"])
    atlas = default_registry().instantiate("atlas", cfg.atlas)
    assert [(p, a.name) for p, a in atlas.parts] == [("cortical", "schaefer"), ("subcortical", "tian")]
    assert atlas.parts[0][1].config.n_rois == 200 and atlas.parts[1][1].config.image == "/a/t.nii"


# ---------------------------------------------------------------------------------------------
# coordinate atlases (bundled with nilearn: offline)


def test_seitzman_coordinates_and_systems():
    atlas = SeitzmanAtlas().load()
    r = atlas.regions
    assert atlas.n_regions == 288  # 300 ROIs minus 12 cortical 'unassigned' ones (no system)
    assert atlas.coords.shape == (288, 3) and atlas.radius == 3.0
    assert r["roi"].is_monotonic_increasing and r["roi"].max() <= 300
    counts = r["system"].value_counts()
    assert counts["subcortical"] == 34 and counts["cerebellar"] == 27
    assert {"Thalamus", "BasalGanglia", "Hippocampus", "Amygdala", "Cerebellum"} <= set(r["network"])
    assert {"Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"} <= set(r["network"])
    assert "Cerebellum-DefaultMode" in set(r["subnetwork"])
    assert (r.loc[r["subnetwork"] == "DefaultMode", "network"] == "Default").all()
    assert "NeuroImage 206:116290" in atlas.references[0]


def test_seitzman_without_anatomy_split():
    atlas = SeitzmanAtlas(SeitzmanAtlas.Config(radius=2.5, split_anatomy=False)).load()
    assert atlas.n_regions == 285  # all 15 'unassigned' ROIs dropped
    assert set(atlas.regions["system"]) == {"unimodal", "attention", "transmodal"}
    with pytest.raises(ConfigError, match="atlas.radius"):
        SeitzmanAtlas(SeitzmanAtlas.Config(radius=0))


def test_dosenbach_coordinates_and_networks():
    atlas = DosenbachAtlas().load()
    r = atlas.regions
    assert atlas.n_regions == 160 and atlas.coords.shape == (160, 3) and atlas.radius == 4.0
    assert r["roi"].tolist() == list(range(1, 161))
    assert r["network"].value_counts().to_dict() == {
        "Default": 34, "SomMot": 33, "SalVentAttn": 32, "Vis": 22, "Cont": 21, "Cerebellum": 18}
    assert set(r.loc[r["network"] == "Cerebellum", "system"]) == {"cerebellar"}
    assert set(r.loc[r["network"] == "SalVentAttn", "subnetwork"]) == {"CinguloOpercular"}


def test_power_needs_a_network_table(tmp_path):
    with pytest.raises(ConfigError, match="config key 'atlas.networks' is not set"):
        PowerAtlas()
    # a made-up assignment, only to exercise the reader (megafc ships no Power networks)
    names = ["Default mode", "Visual", "Sensory/somatomotor Hand", "Uncertain", "Subcortical", "Cerebellar"]
    table = pd.DataFrame({"roi": range(1, 265), "network": [names[i % len(names)] for i in range(264)]})
    path = tmp_path / "power.tsv"
    table.to_csv(path, sep="\t", index=False)
    atlas = PowerAtlas(PowerAtlas.Config(networks=str(path))).load()
    assert atlas.n_regions == 264 - 44 and atlas.coords.shape == (220, 3) and atlas.radius == 5.0
    assert set(atlas.regions["system"]) == {"transmodal", "unimodal", "subcortical", "cerebellar"}
    assert atlas.regions.loc[0, "label"] == "ROI001_DefaultMode"
    table.loc[5, "network"] = "Mystery"
    table.to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match="unknown network name 'Mystery'"):
        PowerAtlas(PowerAtlas.Config(networks=str(path))).load()
    table.iloc[:200].to_csv(path, index=False)
    with pytest.raises(InputError, match="must list each ROI 1-264 once"):
        PowerAtlas(PowerAtlas.Config(networks=str(path))).load()


# ---------------------------------------------------------------------------------------------
# registry


@pytest.mark.parametrize("name", ["schaefer", "yeo", "tian", "cerebellum", "combined", "seitzman", "dosenbach", "power"])
def test_atlases_are_registered(name):
    info = default_registry().get("atlas", name)
    assert info.cls.name == name and info.cls.summary()


def test_instantiate_through_registry(tmp_path, no_download):
    write_schaefer(tmp_path)
    atlas = default_registry().instantiate(
        "atlas", {"name": "schaefer", "n_rois": 100, "yeo_networks": 7, "data_dir": str(tmp_path)}
    ).load()
    assert atlas.n_regions == 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert default_registry().instantiate("atlas", {"name": "dosenbach"}).load().n_regions == 160


def _custom_atlas(tmp_path, rows: list[dict], values=(1, 2, 3, 4)):
    from megafc.plugins.atlases.custom import CustomAtlas

    data = np.zeros((4, 4, 4), dtype=np.int16)
    for k, v in enumerate(values):
        data[k] = v
    nib.Nifti1Image(data, np.eye(4)).to_filename(tmp_path / "img.nii.gz")
    pd.DataFrame(rows).to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    return CustomAtlas(CustomAtlas.Config(image=str(tmp_path / "img.nii.gz"), labels=str(tmp_path / "labels.tsv")))


SCHAEFER4 = ["7Networks_LH_Vis_1", "7Networks_LH_Default_1", "7Networks_RH_Vis_1", "7Networks_RH_Default_1"]


@pytest.mark.parametrize("rows, match", [
    # the image has 4 values, the table names 2: other atlases refused it, custom took 2 regions
    ([{"index": i, "label": lab} for i, lab in zip((1, 2), SCHAEFER4)], r"value\(s\) \[3, 4\] that its label file"),
    ([{"index": i, "label": lab} for i, lab in zip((1, 2, 3, 3), SCHAEFER4)], r"'index' is repeated at line\(s\) \[4, 5\]"),
    ([{"index": i, "label": lab} for i, lab in zip((1, 2.5, 3, 4), SCHAEFER4)], r"line\(s\) \[3\] hold \['2.5'\]"),
    ([{"index": i, "label": lab} for i, lab in zip(("1", "x", 3, 4), SCHAEFER4)], r"line\(s\) \[3\] hold \['x'\]"),
    ([{"index": i, "label": f"region{i}"} for i in (1, 2, 3, 4)],
     r"labels.tsv: .*region1.*give the networks in columns 'network'"),
    ([{"index": i, "label": f"r{i}", "network": n} for i, n in zip((1, 2, 3, 4), ("Vis", "", "Vis", "Default"))],
     r"column 'network' is empty at line\(s\) \[3\]"),
    ([{"index": i, "label": f"r{i}", "network": n} for i, n in zip((1, 2, 3, 4), ("Vis", "Motor", "Vis", "Motor"))],
     r"network\(s\) \['Motor'\] are not Schaefer networks"),
    ([{"index": i, "label": f"r{i}", "subnetwork": "x"} for i in (1, 2, 3, 4)], r"but no 'network'"),
])
def test_custom_atlas_label_tables_are_checked(tmp_path, rows, match):
    """A custom atlas's label table was read with few checks: half the image's regions, repeated or
    fractional indices passed silently, an empty network cell was an internal KeyError."""
    with pytest.raises(InputError, match=match):
        _custom_atlas(tmp_path, rows).load()


def test_custom_atlas_networks_given_in_part_are_kept(tmp_path):
    """A 'network' column alone was thrown away and the networks parsed from the labels again."""
    rows = [{"index": i, "label": f"r{i}", "network": n} for i, n in zip((1, 2, 3, 4), ("Vis", "Vis", "Default", "Default"))]
    regions = _custom_atlas(tmp_path, rows).load().regions
    assert regions["network"].tolist() == ["Vis", "Vis", "Default", "Default"]
    assert regions["subnetwork"].tolist() == regions["network"].tolist()
    assert regions["system"].tolist() == ["unimodal", "unimodal", "transmodal", "transmodal"]
