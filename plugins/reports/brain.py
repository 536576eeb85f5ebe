"""Brains on the page: the effects drawn between network centres on a glass brain.

Each network has a node per hemisphere at the mean centre of its regions (``atlas_regions.tsv``);
a between-network effect whose interval excludes 0 is an edge between the two networks' nodes in
each hemisphere, coloured by its size; a within-network effect colours the network's nodes.
An interactive 3D view of the overall effect (nilearn's ``view_connectome``) is embedded too.
"""

from __future__ import annotations

import html
import threading
from contextlib import contextmanager, nullcontext

import numpy as np
import pandas as pd

from megafc.core.report import Run, figure_html, new_figure, note, save_figure

#: At most this many per-drug glass brains (the overall one is always drawn).
MAX_DRUGS = 6
#: Per-drug glass brains (seen from above) side by side.
DRUGS_PER_ROW = 3


def network_nodes(regions: pd.DataFrame, level: str) -> pd.DataFrame:
    """One node per network and hemisphere (x < 0: left): its mean centre."""
    r = regions.dropna(subset=["x", "y", "z"])
    r = r.assign(hemi=np.where(r["x"] < 0, "L", "R"))
    return r.groupby([level, "hemi"], sort=False)[["x", "y", "z"]].mean().reset_index().rename(columns={level: "network"})


def edge_matrix(effects: pd.DataFrame, nodes: pd.DataFrame, effect: str) -> tuple[np.ndarray, np.ndarray]:
    """(node x node matrix of credible between-network effects, within-network effect per node)."""
    rows = effects[effects["effect"] == effect]
    credible = (rows["hdi_low"] > 0) | (rows["hdi_high"] < 0)
    n = len(nodes)
    mat, within = np.zeros((n, n)), np.zeros(n)
    index = {(net, h): i for i, (net, h) in enumerate(nodes[["network", "hemi"]].itertuples(index=False))}
    for (a, b, mean), ok in zip(rows[["network_a", "network_b", "mean"]].itertuples(index=False), credible):
        if not ok:
            continue
        for h in ("L", "R"):
            i, j = index.get((a, h)), index.get((b, h))
            if i is None or j is None:
                continue
            if a == b:
                within[i] = mean
            else:
                mat[i, j] = mat[j, i] = mean
    return mat, within


_SKIPPING: dict[int, int] = {}  # thread -> how deep inside outlines_without_autoscale
_LOCK = threading.Lock()
_ORIGINAL: list = []  # matplotlib's own Axes._update_patch_limits, while ours is installed


def _update_patch_limits(self, patch):
    if threading.get_ident() not in _SKIPPING:
        _ORIGINAL[0](self, patch)


@contextmanager
def outlines_without_autoscale():
    """nilearn draws each glass-brain outline as ~230 patches and then sets the axes' limits
    from the outline's own bounds; matplotlib meanwhile computes every patch's Bezier extrema
    to update the data limits (60% of the brain figure's time). Skipped while nilearn draws,
    in this thread only (other threads' figures autoscale as usual): the limits nilearn sets
    are the same, so is the figure (a test compares the pixels)."""
    from matplotlib.axes import Axes

    if not callable(getattr(Axes, "_update_patch_limits", None)):  # a matplotlib without it
        yield
        return
    me = threading.get_ident()
    with _LOCK:
        if not _SKIPPING:
            _ORIGINAL[:] = [Axes._update_patch_limits]
            Axes._update_patch_limits = _update_patch_limits
        _SKIPPING[me] = _SKIPPING.get(me, 0) + 1
    try:
        yield
    finally:
        with _LOCK:
            _SKIPPING[me] -= 1
            if not _SKIPPING[me]:
                del _SKIPPING[me]
            if not _SKIPPING:
                Axes._update_patch_limits = _ORIGINAL[0]


def glass_brain(panels: list[tuple[str, np.ndarray, np.ndarray]], coords: np.ndarray, vmax: float,
                fast: bool = True):
    """The first panel (overall) from the left, above and the right; each drug's from above,
    three to a row (the matrices show every drug's effects in full)."""
    from matplotlib import colormaps
    from nilearn import plotting

    cmap = colormaps["RdBu_r"]
    per_row = DRUGS_PER_ROW
    drug_rows = -(-(len(panels) - 1) // per_row)
    row = 2.6
    height = row * (1 + drug_rows)
    fig = new_figure(9, height, layout=None)
    boxes = [(0.0, 1 - row / height, 1.0, row / height, "lzr")]
    for i in range(len(panels) - 1):
        r, c = divmod(i, per_row)
        boxes.append((c / per_row, 1 - row * (r + 2) / height, 1 / per_row, row / height, "z"))
    with outlines_without_autoscale() if fast else nullcontext():
        for k, ((title, mat, within), (x, y, w, h, mode)) in enumerate(zip(panels, boxes)):
            node_color = np.array([cmap(0.5 + 0.5 * v / vmax) if v else (0.73, 0.73, 0.73, 1.0) for v in within])
            # nilearn cannot draw an edge colour bar without edges (only within-network effects)
            edges = bool(np.any(mat[np.triu_indices_from(mat, 1)]))
            plotting.plot_connectome(
                mat, coords, node_color=node_color, node_size=18, edge_cmap=cmap, edge_vmin=-vmax, edge_vmax=vmax,
                edge_threshold=None, display_mode=mode, figure=fig, axes=(x, y, w, h),
                title=title, colorbar=k == 0 and edges, annotate=False, edge_kwargs={"linewidth": 2},
            )
            if k == 0 and not edges:  # the nodes' colours still need their scale
                from matplotlib.cm import ScalarMappable
                from matplotlib.colors import Normalize

                fig.colorbar(ScalarMappable(Normalize(-vmax, vmax), cmap),
                             cax=fig.add_axes((x + 0.96 * w, y + 0.15 * h, 0.012, 0.7 * h)))
    return fig


def interactive_view(mat: np.ndarray, coords: np.ndarray, vmax: float) -> str:
    """nilearn's 3D connectome view, self-contained, in an iframe (srcdoc: no external files)."""
    from nilearn import plotting

    view = plotting.view_connectome(mat, coords, edge_threshold=None, edge_cmap="RdBu_r", symmetric_cmap=True,
                                    linewidth=4, node_size=4, colorbar=True, title="overall effect")
    page = view.get_standalone()
    return (f'<iframe class="connectome-view" title="interactive connectome" width="100%" height="520" '
            f'style="border:1px solid #ddd" srcdoc="{html.escape(page, quote=True)}"></iframe>')


def brain_section(run: Run) -> str:
    regions, effects = run.table("atlas_regions"), run.table("effects")
    if regions is None or effects is None or not {"x", "y", "z"} <= set(regions.columns):
        return note("The atlas has no image, coordinates or display positions (atlas_regions.tsv has no x, y, z): "
                    "no brain figure.")
    level = run.cfg("aggregate", "level", default="network")
    nodes = network_nodes(regions, level)
    coords = nodes[["x", "y", "z"]].to_numpy()
    drugs = [e for e in dict.fromkeys(effects["effect"]) if str(e).startswith("drug:")][:MAX_DRUGS]
    panels = []
    for name in ["overall"] + drugs:
        mat, within = edge_matrix(effects, nodes, name)
        panels.append((name.split(":", 1)[-1], mat, within))
    values = np.concatenate([np.abs(m).ravel() for _, m, _ in panels] + [np.abs(w) for _, _, w in panels])
    vmax = float(values.max()) if values.size and values.max() > 0 else 1.0
    interval = run.interval
    parts = [note(f"Network effects whose {interval} excludes 0, drawn between the networks' centres in each "
                  f"hemisphere (edges) or on the network's nodes (within-network effects); red = FC up on the drug, "
                  f"blue = down; one colour scale (\u00b1{vmax:.3f} Fisher z). Grey nodes: no credible within-network "
                  "effect.")]
    uri = save_figure(run, glass_brain(panels, coords, vmax), "glass_brain")
    parts.append(figure_html(uri, "Glass brains: the overall effect (from the left, above and the right), then "
                                  "each drug's (from above).", "glass_brain"))
    parts.append("<h3>Interactive view (overall effect)</h3>")
    if not np.any(panels[0][1]):
        parts.append(note(f"No between-network overall effect has a {interval} excluding 0: only the nodes are shown."))
    parts.append(interactive_view(panels[0][1], coords, vmax))
    return "\n".join(parts)
