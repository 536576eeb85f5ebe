import pytest

from megafc.core import ConfigError, InputError
from megafc.plugins.atlases.schaefer_names import parse_labels, parse_schaefer_label
from megafc.plugins.atlases.synthetic import SyntheticAtlas


def test_schaefer_labels_parse_to_network_and_subnetwork():
    r = parse_schaefer_label("17Networks_LH_DefaultA_pCunPCC_1")
    assert (r["network"], r["subnetwork"], r["system"], r["hemisphere"]) == ("Default", "DefaultA", "transmodal", "LH")
    assert parse_schaefer_label("17Networks_RH_TempPar_2")["network"] == "Default"
    r7 = parse_schaefer_label("7Networks_LH_Vis_3")
    assert (r7["network"], r7["subnetwork"], r7["system"]) == ("Vis", "Vis", "unimodal")


@pytest.mark.parametrize("label", ["Schaefer_LH_Default_1", "17Networks_XX_DefaultA_1", "17Networks_LH_Foo_1"])
def test_bad_labels_are_named(label):
    with pytest.raises(InputError, match=label):
        parse_schaefer_label(label)


def test_mixed_labels():
    t = parse_labels(["17Networks_LH_VisCent_ExStr_1", "CAU-lh", "aTHA-rh", "Cerebellum_LH_1"])
    assert t["network"].tolist() == ["Vis", "Caudate", "Thalamus", "Cerebellum"]
    assert t["system"].tolist() == ["unimodal", "subcortical", "subcortical", "cerebellar"]


@pytest.mark.parametrize("n", [34, 100, 201])
def test_synthetic_atlas_size_and_networks(n):
    atlas = SyntheticAtlas(SyntheticAtlas.Config(n_cortical=n, n_cerebellar=4)).load()
    assert atlas.n_regions == n + 16 + 4
    assert atlas.groups("network")[:7] == ["Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default"]
    assert len([g for g in atlas.groups("subnetwork") if g[0].isupper()]) == 17 + 7 + 1
    assert {"Caudate", "Putamen", "Thalamus", "Cerebellum"} <= set(atlas.groups("network"))


def test_synthetic_atlas_validates_size():
    with pytest.raises(ConfigError, match="atlas.n_cortical"):
        SyntheticAtlas(SyntheticAtlas.Config(n_cortical=10))
