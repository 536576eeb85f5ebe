"""From region x region connectomes to the tidy network-pair table, and paired differences."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import CONTROL_CONDITIONS, Atlas, Connectomes, exclude
from .errors import ConfigError, InputError

#: Scan metadata carried into the network-pair table (the optional ones when the scans have them).
PAIR_SCAN_COLUMNS = ("scan_id", "dataset", "subject", "session", "drug", "condition", "dose", "mean_fd")
OPTIONAL_PAIR_SCAN_COLUMNS = ("minutes_since_dose", "session_order")


def pair_label(a: str, b: str) -> str:
    return f"{a}--{b}"


def network_pair_table(
    connectomes: Connectomes, atlas: Atlas, scans: pd.DataFrame, level: str = "network"
) -> pd.DataFrame:
    """Mean Fisher-z FC per scan and network pair (``network_a <= network_b``).

    Within-network pairs average the off-diagonal edges once; between-network pairs average
    every edge of the block. A network with a single region has no within-network pair.
    """
    if list(connectomes.labels) != atlas.labels:
        raise InputError(
            f"connectome region labels do not match atlas '{atlas.name}' "
            f"({len(connectomes.labels)} vs {atlas.n_regions} regions)"
        )
    groups = atlas.groups(level)
    systems = atlas.systems(level)
    member = atlas.regions[level].to_numpy()
    onehot = (member[:, None] == np.asarray(groups, dtype=object)[None, :]).astype(float)
    z = connectomes.matrices.copy()
    idx = np.arange(z.shape[1])
    z[:, idx, idx] = 0.0
    sums = np.einsum("ri,srt,tj->sij", onehot, z, onehot, optimize=True)
    size = onehot.sum(axis=0)
    counts = np.outer(size, size) - np.diag(size)  # ordered off-diagonal edges
    iu, ju = np.triu_indices(len(groups))
    keep = counts[iu, ju] > 0
    iu, ju = iu[keep], ju[keep]
    means = sums[:, iu, ju] / counts[iu, ju]
    n_edges = np.where(iu == ju, counts[iu, ju] // 2, counts[iu, ju]).astype(int)
    a = np.asarray(groups, dtype=object)[iu]
    b = np.asarray(groups, dtype=object)[ju]
    lo = np.where(a <= b, a, b)
    hi = np.where(a <= b, b, a)
    n_scans, n_pairs = means.shape
    meta = scans.set_index("scan_id").loc[connectomes.scan_ids].reset_index()
    table = pd.DataFrame(
        {
            "network_a": np.tile(lo, n_scans),
            "network_b": np.tile(hi, n_scans),
            "system_a": [systems[x] for x in np.tile(lo, n_scans)],
            "system_b": [systems[x] for x in np.tile(hi, n_scans)],
            "n_edges": np.tile(n_edges, n_scans),
            "fc": means.reshape(-1),
        }
    )
    carried = list(PAIR_SCAN_COLUMNS) + [c for c in OPTIONAL_PAIR_SCAN_COLUMNS if c in meta.columns]
    meta_rep = meta.loc[np.repeat(np.arange(n_scans), n_pairs), carried]
    out = pd.concat([meta_rep.reset_index(drop=True), table], axis=1)
    out.attrs["level"] = level
    out.attrs["networks"] = groups
    # drugs of the data none of whose drug scans is analysed (left out, excluded): a model asked
    # about them (a contrast) can say so instead of calling them unknown
    in_data = set(scans.loc[scans["condition"] == "drug", "drug"].dropna())
    out.attrs["absent_drugs"] = sorted(in_data - set(meta.loc[meta["condition"] == "drug", "drug"]))
    if level == "subnetwork":  # which network each subnetwork belongs to (subnetwork specificity)
        out.attrs["parents"] = dict(zip(atlas.regions["subnetwork"], atlas.regions["network"]))
    return out


def parent_pairs(network_a: pd.Series, network_b: pd.Series, parents: dict[str, str]) -> pd.DataFrame:
    """The network pair (``network_a``, ``network_b`` in atlas order) each subnetwork pair lies
    in, from ``attrs["parents"]`` (subnetwork -> network, in atlas order); NaN for names that
    are not subnetworks (a summary's pseudo pair)."""
    order = {net: i for i, net in enumerate(dict.fromkeys(parents.values()))}
    a = pd.Series(network_a).map(parents).reset_index(drop=True)
    b = pd.Series(network_b).map(parents).reset_index(drop=True)
    first = a.map(order).fillna(-1) <= b.map(order).fillna(-1)
    return pd.DataFrame({"network_a": a.where(first, b), "network_b": b.where(first, a)})


def select_pairs(pairs: pd.DataFrame, wanted: list | None, key: str = "aggregate.pairs") -> pd.DataFrame:
    """Only the network pairs in ``wanted`` (each two network names, either order); summary
    outcomes (``network_b`` == "") are kept. ``None`` keeps everything.

    For slow per-pair models and focused questions: the same pairs in every job of a sweep.
    """
    if wanted is None:
        return pairs
    if not len(wanted) or any(len(p) != 2 for p in wanted):
        raise ConfigError(f"config key '{key}' must be a non-empty list of network pairs, e.g. [[Default, Vis]]")
    present = set(zip(pairs["network_a"], pairs["network_b"]))
    keys = {tuple(sorted(map(str, p))) for p in wanted}
    missing = sorted(k for k in keys if k not in present)
    if missing:
        known = sorted({n for a, b in present if b for n in (a, b)})
        raise ConfigError(f"config key '{key}' names pair(s) {[list(k) for k in missing]} that the network-pair "
                          f"table does not have; its networks are {known}")
    keep = [(a, b) in keys or b == "" for a, b in zip(pairs["network_a"], pairs["network_b"])]
    out = pairs[np.asarray(keep)].reset_index(drop=True)
    out.attrs = dict(pairs.attrs)
    return out


def mark_unpaired(scans: pd.DataFrame) -> pd.DataFrame:
    """Exclude scans that cannot enter a drug-minus-control comparison, saying why.

    A drug scan needs an included control scan (placebo or baseline) of the same subject in
    the same dataset; a control scan needs an included drug scan to be compared with.
    """
    out = scans
    inc = ~out["excluded"]
    key = list(zip(out["dataset"], out["subject"]))
    has_control = {k for k, c, i in zip(key, out["condition"], inc) if i and c in CONTROL_CONDITIONS}
    has_drug = {k for k, c, i in zip(key, out["condition"], inc) if i and c == "drug"}
    no_control = np.array([c == "drug" and k not in has_control for k, c in zip(key, out["condition"])])
    out = exclude(out, no_control, "subject has no usable control (placebo/baseline) scan")
    no_drug = np.array(
        [c in CONTROL_CONDITIONS and k not in has_drug for k, c in zip(key, out["condition"])]
    )
    return exclude(out, no_drug, "subject has no usable drug scan to compare with")


def mark_uninformative(scans: pd.DataFrame) -> pd.DataFrame:
    """For scan-level models: every dataset needs included drug and control scans.

    A dataset left with control scans only informs no drug effect: its scans are excluded,
    saying why. A dataset with drug scans but no control cannot separate its drug effect from
    its own mean FC: that is refused, naming the dataset.
    """
    inc = scans[~scans["excluded"]]
    is_drug = inc["condition"] == "drug"
    n_drug = is_drug.groupby(inc["dataset"]).sum()
    n_ctrl = (~is_drug).groupby(inc["dataset"]).sum()
    for ds in sorted(n_drug.index[(n_drug > 0) & (n_ctrl == 0)]):
        lost = int((scans["excluded"] & (scans["dataset"] == ds) & scans["condition"].isin(CONTROL_CONDITIONS)).sum())
        raise InputError(
            f"dataset '{ds}' has {int(n_drug[ds])} included drug scan(s) but no included control (placebo or "
            f"baseline) scan{f' ({lost} excluded by QC)' if lost else ''}, so its drug effect cannot be told apart "
            "from its own mean FC; add its control scans or leave the dataset out (loo_dataset)"
        )
    no_drug = scans["dataset"].isin(n_drug.index[n_drug == 0])
    return exclude(scans, no_drug, "dataset has no usable drug scan (its scans inform no drug effect)")


def paired_differences(pairs: pd.DataFrame) -> pd.DataFrame:
    """Drug-minus-control FC per drug scan and network pair.

    The control is the mean of the subject's control scans in the same dataset. Differencing
    removes subject and dataset intercepts exactly in crossover and pre/post designs. With a
    ``session_order`` column, ``order_diff`` is the drug scan's order minus its control's (+1:
    the drug session came one session later).
    """
    keys = ["dataset", "subject", "network_a", "network_b"]
    ctrl = pairs[pairs["condition"].isin(CONTROL_CONDITIONS)]
    ordered = "session_order" in pairs.columns
    if ordered:
        ctrl = ctrl.assign(session_order=pd.to_numeric(ctrl["session_order"], errors="coerce"))
    orders = {"order_control": ("session_order", "mean"), "n_ordered": ("session_order", "count"),
              "n_control": ("fc", "size")} if ordered else {}
    control = ctrl.groupby(keys, sort=False).agg(fc_control=("fc", "mean"), fd_control=("mean_fd", "mean"), **orders)
    if ordered:  # a control without an order leaves the difference's order unknown, not the others' mean
        control.loc[control["n_ordered"] < control["n_control"], "order_control"] = np.nan
    drug = pairs[pairs["condition"] == "drug"]
    merged = drug.join(control, on=keys, how="left")
    missing = merged["fc_control"].isna()
    if missing.any():
        bad = sorted(set(merged.loc[missing, "scan_id"]))[:5]
        raise InputError(f"drug scan(s) {bad} have no control scan of the same subject")
    merged["fc_diff"] = merged["fc"] - merged["fc_control"]
    merged["fd_diff"] = merged["mean_fd"] - merged["fd_control"]
    cols = ["scan_id", "dataset", "subject", "drug", "dose", "network_a", "network_b",
            "system_a", "system_b", "fc_diff", "fd_diff"]
    if ordered:
        merged["order_diff"] = pd.to_numeric(merged["session_order"], errors="coerce") - merged["order_control"]
        cols.append("order_diff")
    return merged[cols].reset_index(drop=True)
