"""Network names of the Schaefer-2018 / Yeo-2011 parcellations and their system classes.

Shared by every atlas plugin that yields Schaefer-style labels, so the synthetic atlas, the
real Schaefer atlas and labels read from precomputed files all parse the same way.
"""

from __future__ import annotations

import pandas as pd

from megafc.core import InputError

#: Yeo-17 (Schaefer naming) subnetwork -> Yeo-7 network.
SUBNETWORK_TO_NETWORK: dict[str, str] = {
    "VisCent": "Vis", "VisPeri": "Vis",
    "SomMotA": "SomMot", "SomMotB": "SomMot",
    "DorsAttnA": "DorsAttn", "DorsAttnB": "DorsAttn",
    "SalVentAttnA": "SalVentAttn", "SalVentAttnB": "SalVentAttn",
    "LimbicA": "Limbic", "LimbicB": "Limbic",
    "ContA": "Cont", "ContB": "Cont", "ContC": "Cont",
    "DefaultA": "Default", "DefaultB": "Default", "DefaultC": "Default",
    "TempPar": "Default",
}
NETWORKS_7 = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")

#: Yeo-7 network -> system class used by summaries (unimodal vs transmodal, as in the paper).
NETWORK_SYSTEM: dict[str, str] = {
    "Vis": "unimodal", "SomMot": "unimodal",
    "DorsAttn": "attention", "SalVentAttn": "attention",
    "Limbic": "transmodal", "Cont": "transmodal", "Default": "transmodal",
}

#: Melbourne subcortex (Tian) scale-1 structures: label prefix -> structure name.
TIAN_S1_STRUCTURES: dict[str, str] = {
    "HIP": "Hippocampus", "AMY": "Amygdala", "pTHA": "Thalamus", "aTHA": "Thalamus",
    "NAc": "Accumbens", "GP": "Pallidum", "PUT": "Putamen", "CAU": "Caudate",
}


def parse_schaefer_label(label: str) -> dict[str, str]:
    """``17Networks_LH_DefaultA_pCunPCC_1`` -> network Default, subnetwork DefaultA, LH.

    7-network labels (``7Networks_LH_Default_PFC_1``) get the network as subnetwork.
    """
    parts = str(label).split("_")
    if len(parts) < 3 or parts[0] not in ("7Networks", "17Networks") or parts[1] not in ("LH", "RH"):
        raise InputError(
            f"region label '{label}' is not a Schaefer-style name "
            "(expected e.g. '17Networks_LH_DefaultA_pCunPCC_1' or '7Networks_RH_Vis_3')"
        )
    token = parts[2]
    if parts[0] == "17Networks":
        if token not in SUBNETWORK_TO_NETWORK:
            raise InputError(f"region label '{label}': unknown Yeo-17 network '{token}'")
        network, subnetwork = SUBNETWORK_TO_NETWORK[token], token
    else:
        if token not in NETWORK_SYSTEM:
            raise InputError(f"region label '{label}': unknown Yeo-7 network '{token}'")
        network = subnetwork = token
    return {
        "label": str(label), "network": network, "subnetwork": subnetwork,
        "system": NETWORK_SYSTEM[network], "hemisphere": parts[1],
    }


def parse_subcortical_label(label: str) -> dict[str, str]:
    """Tian-style ``CAU-lh`` / ``aTHA-rh`` (any scale's first token) -> structure."""
    head, _, hemi = str(label).rpartition("-")
    prefix = head.split("-")[0] if head else ""
    if prefix not in TIAN_S1_STRUCTURES:
        raise InputError(f"region label '{label}' is not a Tian subcortical name (e.g. 'CAU-lh')")
    structure = TIAN_S1_STRUCTURES[prefix]
    return {"label": str(label), "network": structure, "subnetwork": structure,
            "system": "subcortical", "hemisphere": hemi.upper()}


def parse_cerebellar_label(label: str) -> dict[str, str]:
    """``Cerebellum_LH_1`` -> network Cerebellum."""
    parts = str(label).split("_")
    if parts[0] != "Cerebellum":
        raise InputError(f"region label '{label}' is not a cerebellar name (e.g. 'Cerebellum_LH_1')")
    return {"label": str(label), "network": "Cerebellum", "subnetwork": "Cerebellum",
            "system": "cerebellar", "hemisphere": parts[1] if len(parts) > 2 else ""}


def parse_labels(labels: list[str]) -> pd.DataFrame:
    """A region table from labels alone (cortical Schaefer, Tian subcortical, cerebellar)."""
    rows = []
    for label in labels:
        s = str(label)
        if s.startswith(("7Networks_", "17Networks_")):
            rows.append(parse_schaefer_label(s))
        elif s.startswith("Cerebellum"):
            rows.append(parse_cerebellar_label(s))
        else:
            rows.append(parse_subcortical_label(s))
    return pd.DataFrame(rows)
