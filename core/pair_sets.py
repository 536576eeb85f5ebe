"""Summaries: named sets of network pairs, fitted as outcomes of their own.

The paper's claims are about sets of pairs (transmodal-unimodal coupling, within-network
connectivity, caudate with sensory networks, ...). A summary's per-scan mean FC over its pairs
is handed to the pooling model as one more outcome, so its interval carries the real
correlation between the pairs (averaging the pairs' posteriors afterwards treats them as
independent and gave intervals 2-3x too narrow).

A definition is a mapping with one of:

* ``pairs: [[Default, Vis], [Cont, SomMot]]``: these network pairs (either order);
* ``systems: [transmodal, unimodal]``: every pair between the two system classes (one name:
  pairs within that class);
* ``networks: [Vis, Vis]``: the pair(s) between two networks; with ``systems``, e.g.
  ``networks: [Caudate, Putamen], systems: [unimodal]``: one side any of the networks, the
  other side in the systems.

and optionally ``within: true|false`` (only within- or between-network pairs) and
``any_system: true`` (with ``systems``: both networks in any of the listed classes). At subnetwork
level, a pair belongs to a set when its subnetworks' networks do. Built-ins (``summaries_builtin``)
follow the paper: within- and between-network connectivity of cortical networks,
transmodal-unimodal, within-visual, within-somatomotor, and each subcortical or cerebellar
region with the unimodal and with the transmodal networks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .data import Atlas
from .errors import ConfigError

CORTICAL = ("unimodal", "transmodal", "attention")
#: Columns of the membership table (summary_pairs.tsv).
MEMBERSHIP_COLUMNS = ("summary", "network_a", "network_b")


def builtin_definitions(atlas: Atlas) -> dict[str, dict[str, Any]]:
    """The paper's summaries, for the networks this atlas has."""
    out: dict[str, dict[str, Any]] = {
        "within_network": {"systems": list(CORTICAL), "within": True, "any_system": True},
        "between_network": {"systems": list(CORTICAL), "within": False, "any_system": True},
        "transmodal-unimodal": {"systems": ["transmodal", "unimodal"]},
        "within_visual": {"networks": ["Vis", "Vis"]},
        "within_somatomotor": {"networks": ["SomMot", "SomMot"]},
    }
    regions = atlas.regions.drop_duplicates("network")
    for net, system in zip(regions["network"], regions["system"]):
        if system in ("subcortical", "cerebellar"):
            for other in ("unimodal", "transmodal"):
                out[f"{net}-{other}"] = {"networks": [net], "systems": [other]}
    return out


def membership(atlas: Atlas, level: str, definitions: dict[str, Any], builtin: bool = True) -> pd.DataFrame:
    """One row per summary and member pair (``network_a <= network_b``, at ``level``).

    Summaries with no member pair in this atlas are left out; a user definition naming an
    unknown network or system, or matching nothing, is a config error.
    """
    groups = atlas.groups(level)
    parent = dict(zip(atlas.regions[level], atlas.regions["network"]))
    system = atlas.systems(level)
    iu, ju = np.triu_indices(len(groups))
    sizes = atlas.regions[level].value_counts()
    pairs = [(groups[i], groups[j]) for i, j in zip(iu, ju) if i != j or sizes[groups[i]] > 1]
    pairs = [(min(a, b), max(a, b)) for a, b in pairs]
    rows = []
    user = dict(definitions or {})
    builtins = builtin_definitions(atlas) if builtin else {}
    clash = sorted(set(user) & set(builtins))
    if clash:  # it replaced the built-in silently, and methods.md still described the built-in
        raise ConfigError(f"config key 'summaries' defines {clash}, the name(s) of built-in summaries; choose "
                          "another name, or summaries_builtin=false to define your own set")
    defs = {**builtins, **user}
    for name, spec in defs.items():
        if name in user:
            spec = _checked_shape(name, spec)
        match = _matcher(name, dict(spec), atlas, is_user=name in user)
        members = [(a, b) for a, b in pairs if match(a, b, parent, system)]
        if not members:
            if name in user:
                raise ConfigError(f"config key 'summaries.{name}' matches no network pair of atlas '{atlas.name}' "
                                  f"at {level} level")
            continue
        rows += [(name, a, b) for a, b in members]
    return pd.DataFrame(rows, columns=list(MEMBERSHIP_COLUMNS))


def _checked_shape(name: str, spec: Any) -> dict[str, Any]:
    """A user's summary as a mapping whose list fields are lists (a bare string was read letter
    by letter; a number or a list in place of the mapping was an internal error)."""
    key = f"config key 'summaries.{name}'"
    example = "e.g. {pairs: [[Default, Vis]]} or {systems: [transmodal, unimodal]}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{key} is {spec!r}; expected a mapping, {example}")
    for field in ("pairs", "systems", "networks"):
        value = spec.get(field)
        if value is not None and (isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple))):
            raise ConfigError(f"config key 'summaries.{name}.{field}' is {value!r}; expected a list, {example}")
    if any(isinstance(p, (str, bytes)) or not isinstance(p, (list, tuple)) for p in spec.get("pairs") or []):
        raise ConfigError(f"config key 'summaries.{name}.pairs' is {spec['pairs']!r}; expected a list of "
                          f"two-network lists, {example}")
    return spec


def _matcher(name: str, spec: dict[str, Any], atlas: Atlas, is_user: bool):
    key = f"config key 'summaries.{name}'"
    known = {"pairs", "systems", "networks", "within", "any_system"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{key} has unknown field(s) {unknown}; expected pairs, systems, networks and/or within")
    networks = set(atlas.regions["network"])
    systems = set(atlas.regions["system"])
    explicit = [tuple(p) for p in spec.get("pairs") or []]
    nets = list(spec.get("networks") or [])
    syss = list(spec.get("systems") or [])
    within = spec.get("within")
    if not (explicit or nets or syss):
        raise ConfigError(f"{key} needs 'pairs', 'systems' or 'networks'")
    if is_user:
        bad = sorted({n for p in explicit for n in p} | set(nets)) if explicit or nets else []
        bad = [n for n in bad if n not in networks and n not in set(atlas.regions.get("subnetwork", []))]
        if bad:
            raise ConfigError(f"{key} names unknown network(s) {bad}; the atlas has {sorted(networks)}")
        if any(len(p) != 2 for p in explicit):
            raise ConfigError(f"{key}: every entry of 'pairs' must be two network names")
        bad = sorted(set(syss) - systems)
        if bad:
            raise ConfigError(f"{key} names unknown system class(es) {bad}; the atlas has {sorted(systems)}")
        if len(syss) > 2 and not spec.get("any_system") and not nets:  # a pair has two sides
            raise ConfigError(f"{key} lists {len(syss)} systems {syss}; a pair joins two: give two (e.g. "
                              "[transmodal, unimodal]), or any_system: true for every pair among them")
    wanted = {frozenset(p) for p in explicit}

    def match(a: str, b: str, parent: dict, system: dict) -> bool:
        pa, pb = parent.get(a, a), parent.get(b, b)
        if within is not None and (pa == pb) != bool(within):
            return False
        if explicit:
            return frozenset((pa, pb)) in wanted or frozenset((a, b)) in wanted
        sides = [(pa, system[a]), (pb, system[b])]
        if spec.get("any_system"):  # both sides in any of the listed systems
            return all(s in syss for _, s in sides)
        if nets and len(nets) == 2 and not syss:
            return sorted(nets) == sorted([pa, pb])
        if nets:  # one side one of these networks, the other side in the systems (if given)
            return any(n in nets and (not syss or s2 in syss) and n2 not in nets
                       for (n, _), (n2, s2) in (sides, sides[::-1]))
        if len(syss) == 1:
            return sides[0][1] == sides[1][1] == syss[0]
        return sorted(s for _, s in sides) == sorted(syss[:2])

    return match


def summary_outcomes(pairs: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """Network-pair-table rows for the summaries: per scan, the mean FC over each summary's
    pairs, as a pseudo pair (``network_a`` = the summary's name, ``network_b`` = "")."""
    if members.empty:
        return pairs.iloc[:0]
    keyed = pairs.merge(members, on=["network_a", "network_b"], how="inner")
    scan_cols = [c for c in pairs.columns if c not in ("network_a", "network_b", "system_a", "system_b",
                                                        "n_edges", "fc")]
    out = keyed.groupby(["summary", "scan_id"], sort=False).agg(
        fc=("fc", "mean"), n_edges=("n_edges", "sum"), **{c: (c, "first") for c in scan_cols if c != "scan_id"})
    out = out.reset_index().rename(columns={"summary": "network_a"})
    out["network_b"] = ""
    out["system_a"] = out["system_b"] = "summary"
    return out[list(pairs.columns)]


def with_summaries(pairs: pd.DataFrame, atlas: Atlas, definitions: dict[str, Any] | None = None,
                   builtin: bool = True) -> pd.DataFrame:
    """The network-pair table plus the summaries' pseudo pairs, membership in ``attrs["summaries"]``
    (what a model with ``fits_summaries`` receives)."""
    members = membership(atlas, pairs.attrs.get("level", "network"), definitions or {}, builtin)
    out = pd.concat([pairs, summary_outcomes(pairs, members)], ignore_index=True) if len(members) else pairs.copy()
    out.attrs = {**pairs.attrs, "summaries": members}
    return out
