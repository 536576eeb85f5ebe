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

#: Melbourne subcortex (Tian) structure codes of every scale (S1-S4) -> structure name.
#: A label's leading token is one of these, optionally behind one lower-case position
#: prefix (TIAN_POSITION_PREFIXES): ``aHIP``, ``pCAU``, ``lAMY``, ``aGP``, ``pTHA``.
TIAN_STRUCTURES: dict[str, str] = {
    "HIP": "Hippocampus", "AMY": "Amygdala", "THA": "Thalamus", "NAc": "Accumbens",
    "GP": "Pallidum", "PUT": "Putamen", "CAU": "Caudate",
}
#: anterior, posterior, lateral, medial, dorsal, ventral
TIAN_POSITION_PREFIXES: tuple[str, ...] = ("a", "p", "l", "m", "d", "v")
_TIAN_CODES = {code.upper(): name for code, name in TIAN_STRUCTURES.items()}

#: Yeo-2011 network numbers (the values of the Yeo/Buckner images, labelled ``7Networks_k`` /
#: ``17Networks_k`` in their colour tables) -> Schaefer-2018 network names.
YEO7_NAMES: dict[int, str] = {
    1: "Vis", 2: "SomMot", 3: "DorsAttn", 4: "SalVentAttn", 5: "Limbic", 6: "Cont", 7: "Default",
}
#: Yeo-17 number -> Schaefer-17 name. The standard correspondence: Yeo's 17-network colour
#: table and Schaefer's 17Networks label files give each network the same RGB colour (e.g.
#: 11 and ContC are both 119 140 176); note that 11-13 are ContC, ContA, ContB and 14-17 are
#: TempPar, DefaultC, DefaultA, DefaultB (not in Schaefer's order).
YEO17_NAMES: dict[int, str] = {
    1: "VisCent", 2: "VisPeri", 3: "SomMotA", 4: "SomMotB", 5: "DorsAttnA", 6: "DorsAttnB",
    7: "SalVentAttnA", 8: "SalVentAttnB", 9: "LimbicA", 10: "LimbicB", 11: "ContC",
    12: "ContA", 13: "ContB", 14: "TempPar", 15: "DefaultC", 16: "DefaultA", 17: "DefaultB",
}


def yeo_network_name(n_networks: int, number: int) -> tuple[str, str]:
    """Yeo network ``number`` of the 7- or 17-network solution -> (network, subnetwork)."""
    names = YEO7_NAMES if n_networks == 7 else YEO17_NAMES
    if number not in names:
        raise InputError(f"Yeo {n_networks}-network number {number} does not exist (expected 1-{len(names)})")
    sub = names[number]
    return (sub if n_networks == 7 else SUBNETWORK_TO_NETWORK[sub]), sub


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


def tian_structure(token: str) -> str | None:
    """A Tian label's leading token -> structure name (None if it is not one).

    ``CAU``/``NAc`` map directly (case-insensitively); otherwise one lower-case position prefix
    is stripped: ``pTHA`` -> Thalamus, ``lAMY`` -> Amygdala, ``aGP`` -> Pallidum.
    """
    if token.upper() in _TIAN_CODES:
        return _TIAN_CODES[token.upper()]
    if len(token) > 1 and token[0] in TIAN_POSITION_PREFIXES and token[1:].upper() in _TIAN_CODES:
        return _TIAN_CODES[token[1:].upper()]
    return None


def parse_subcortical_label(label: str) -> dict[str, str]:
    """Tian-style label of any scale (S1-S4) -> its structure.

    A label is ``<structure token>[-<subdivision>...]-<lh|rh>``: ``CAU-lh``, ``aTHA-rh`` (S1),
    ``pCAU-lh``, ``THA-DA-rh``, ``NAc-shell-lh`` (S2), ``HIP-head-rh``, ``PUT-VA-rh``,
    ``CAU-tail-lh`` (S3), ``HIP-head-m1-rh``, ``THA-VAip-lh`` (S4). Only the leading token
    decides the structure (see tian_structure); network and subnetwork are the structure.
    """
    s = str(label)
    tokens = s.split("-")
    structure = tian_structure(tokens[0]) if len(tokens) >= 2 else None
    hemi = tokens[-1].lower()
    if structure is None or hemi not in ("lh", "rh"):
        raise InputError(
            f"region label '{label}' is not a Tian subcortical name (expected "
            "'<structure>[-<part>...]-<lh|rh>' with structure HIP, AMY, THA, NAc, GP, PUT or CAU, "
            "optionally prefixed a/p/l/m/d/v, e.g. 'CAU-lh', 'aTHA-rh', 'THA-DA-rh', 'pCAU-lh')"
        )
    return {"label": s, "network": structure, "subnetwork": structure,
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
