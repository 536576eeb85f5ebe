"""The ``pymc_edges`` pooling model: partial pooling of every region pair (edge).

Stage 1 (per dataset unit k, i.e. dataset or dataset[drug], and edge e): the mean
drug-minus-control Fisher-z difference ybar[k, e] over the unit's drug scans (control = mean
of the subject's control scans in the same dataset) and its squared standard error
s2[k, e] = sample variance / n, treated as known (the usual two-stage approximation).

Stage 2 (per edge e, hyperparameters per network pair p(e) or shared)::

    ybar[k, e] ~ Normal(theta[k, e], s2[k, e])
    theta[k, e] ~ Normal(beta[drug(k), e], tau_dataset[p(e)])
    beta[d, e]  ~ Normal(mu[e], tau_drug[p(e)])
    mu[e]       ~ Normal(0, effect_sd)
    tau_*       ~ HalfNormal(*_sd)

theta, beta and mu are Gaussian on a tree, so they are integrated out exactly: the marginal
likelihood of ybar[:, e] is computed by precision-weighted collapsing (units -> drug, drugs ->
overall), O(E K) per evaluation, and NUTS samples only the tau hyperparameters. For a thinned
set of hyperparameter draws, mu[e] and beta[d, e] are drawn from their exact Gaussian
conditionals, vectorised over edges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from megafc.core import (
    CONTROL_CONDITIONS,
    ConfigError,
    InputError,
    PoolingInputs,
    PoolingModel,
    PoolingResult,
)
from megafc.stats import bfmi_warning, flag_ok, rhat_warning, sampler_diagnostics, sampler_healthy, summarise_draws

from .derived import absent_drugs, contrast_pairs
from .design import (
    PYMC_PACKAGES,
    NUTSConfig,
    PairedHeterogeneity,
    PoolingLevels,
    bayesian_references,
    ess_threshold,
    resolve_sampler,
    sample,
    validate_sampler_config,
)

EDGE_COLUMNS = ("region_a", "region_b", "network_a", "network_b", "effect", "mean", "sd", "hdi_low", "hdi_high", "pd")


@dataclass
class EdgeStats(PoolingLevels):
    """Per-unit edge summary statistics (units in drug order)."""

    ybar: np.ndarray  # (K, E)
    s2: np.ndarray  # (K, E)
    n: np.ndarray  # (K,) drug scans per unit
    units: list[str]
    unit_drug: np.ndarray  # (K,) drug index
    drugs: list[str]
    iu: np.ndarray
    ju: np.ndarray
    warnings: list[str] = field(default_factory=list)


def edge_statistics(connectomes, scans: pd.DataFrame) -> EdgeStats:
    """Per-unit mean drug-minus-control edge differences and their squared standard errors.

    Works unit by unit so only one unit's differences (n_k x E) are held at once.
    """
    mats = connectomes.matrices
    n_regions = mats.shape[1]
    iu, ju = np.triu_indices(n_regions, k=1)
    pos = {s: i for i, s in enumerate(connectomes.scan_ids)}
    meta = scans[scans["scan_id"].isin(pos) & ~scans["excluded"].astype(bool)]
    drug_scans = meta[meta["condition"] == "drug"]
    ctrl = meta[meta["condition"].isin(CONTROL_CONDITIONS)]
    ctrl_pos = ctrl.groupby(["dataset", "subject"])["scan_id"].apply(lambda s: [pos[x] for x in s]).to_dict()
    multi = drug_scans.groupby("dataset")["drug"].nunique()
    multi = set(multi.index[multi > 1])
    drug_scans = drug_scans.assign(
        unit=[f"{ds}[{d}]" if ds in multi else ds for ds, d in zip(drug_scans["dataset"], drug_scans["drug"])]
    )
    warnings = []
    unpaired = [k not in ctrl_pos for k in zip(drug_scans["dataset"], drug_scans["subject"])]
    if any(unpaired):
        warnings.append(f"pooling: {sum(unpaired)} drug scan(s) without a control scan left out")
        drug_scans = drug_scans[~np.array(unpaired)]
    counts = drug_scans.groupby("unit").size()
    small = sorted(counts.index[counts < 2])
    if small:
        warnings.append(f"pooling: unit(s) {small} have < 2 drug scans (no standard error) and are left out")
        drug_scans = drug_scans[~drug_scans["unit"].isin(small)]
    if drug_scans.empty:
        raise InputError("pooling: no dataset has >= 2 drug scans with a control scan; nothing to pool")
    drugs = sorted(drug_scans["drug"].unique())
    units = list(dict.fromkeys(drug_scans.sort_values(["drug", "unit"])["unit"]))
    unit_drug = np.array([drugs.index(drug_scans.loc[drug_scans["unit"] == u, "drug"].iloc[0]) for u in units])
    n_edges = len(iu)
    ybar = np.empty((len(units), n_edges))
    s2 = np.empty((len(units), n_edges))
    n = np.empty(len(units), dtype=int)
    for k, unit in enumerate(units):
        rows = drug_scans[drug_scans["unit"] == unit]
        diffs = np.empty((len(rows), n_edges))
        for r, (sid, ds, sub) in enumerate(zip(rows["scan_id"], rows["dataset"], rows["subject"])):
            c = ctrl_pos[(ds, sub)]
            control = mats[c[0], iu, ju] if len(c) == 1 else mats[c][:, iu, ju].mean(axis=0)
            diffs[r] = mats[pos[sid], iu, ju] - control
        n[k] = len(rows)
        ybar[k] = diffs.mean(axis=0)
        s2[k] = diffs.var(axis=0, ddof=1) / len(rows)
    # guard against zero variance (e.g. constant edges): floor at a tiny positive value
    np.maximum(s2, 1e-12, out=s2)
    return EdgeStats(ybar, s2, n, units, unit_drug, drugs, iu, ju, warnings)


def collapse(ybar, s2, incidence, unit_drug, tk2, td2, use_drug_level):
    """Precision-weighted collapse of the tree, given hyperparameter variances (numpy).

    Returns (m, W, mbar, P): per-drug precision-weighted means and precisions (D, E), and the
    overall collapsed mean and precision (E,) of the drug means around mu.
    """
    w = 1.0 / (s2 + tk2)
    W = incidence @ w
    m = (incidence @ (w * ybar)) / W
    if use_drug_level:
        pv = 1.0 / (1.0 / W + td2)
        P = pv.sum(axis=0)
        mbar = (pv * m).sum(axis=0) / P
    else:
        P, mbar = W[0], m[0]
    return m, W, mbar, P


def _kernel():
    """Numba kernel: per-edge marginal log-likelihood and its derivatives in tk2 and td2."""
    global _KERNEL
    if _KERNEL is None:
        import numba

        @numba.njit(cache=False)  # serial: chains run in forked processes
        def kernel(y, s2, ud, n_drugs, tk2, u, effect_var, use_drug, want_grad, ll, gt, gu, scratch):
            n_units, n_edges = y.shape
            for e in range(n_edges):
                W = scratch[e, 0]
                S = scratch[e, 1]
                bh = scratch[e, 2]
                vb = scratch[e, 3]
                asum = scratch[e, 4]
                for d in range(n_drugs):
                    W[d] = 0.0
                    S[d] = 0.0
                    asum[d] = 0.0
                acc = 0.0
                prod = 1.0  # products of a few terms, then one log: logs dominate the cost
                for k in range(n_units):
                    a = s2[k, e] + tk2[e]
                    prod *= a
                    W[ud[k]] += 1.0 / a
                    S[ud[k]] += y[k, e] / a
                for k in range(n_units):
                    a = s2[k, e] + tk2[e]
                    r = y[k, e] - S[ud[k]] / W[ud[k]]
                    acc -= 0.5 * r * r / a
                acc -= 0.5 * np.log(prod)
                if use_drug:
                    P = 0.0
                    num = 0.0
                    prod = 1.0
                    for d in range(n_drugs):
                        prod *= W[d]
                        pv = 1.0 / (1.0 / W[d] + u[e])
                        P += pv
                        num += pv * S[d] / W[d]
                    mbar = num / P
                    for d in range(n_drugs):
                        v = 1.0 / W[d] + u[e]
                        prod *= v
                        md = S[d] / W[d] - mbar
                        acc -= 0.5 * md * md / v
                    acc -= 0.5 * np.log(prod * P)
                else:
                    acc -= 0.5 * np.log(W[0])
                    P = W[0]
                    mbar = S[0] / W[0]
                T = 1.0 / P + effect_var
                acc -= 0.5 * np.log(T) + 0.5 * mbar * mbar / T
                ll[e] = acc
                if want_grad:
                    v_mu = 1.0 / (P + 1.0 / effect_var)
                    mu_hat = P * mbar * v_mu
                    for d in range(n_drugs):
                        if use_drug:
                            r = 1.0 / (u[e] * W[d] + 1.0)
                            bh[d] = S[d] * u[e] * r + r * mu_hat
                            vb[d] = u[e] * r + r * r * v_mu
                        else:
                            bh[d] = mu_hat
                            vb[d] = v_mu
                    g = 0.0
                    for k in range(n_units):
                        w = 1.0 / (s2[k, e] + tk2[e])
                        al = w * (y[k, e] - bh[ud[k]])
                        asum[ud[k]] += al
                        g += al * al - w + w * w * vb[ud[k]]
                    gt[e] = 0.5 * g
                    g = 0.0
                    for d in range(n_drugs):
                        g += asum[d] * asum[d] - W[d] + W[d] * W[d] * vb[d]
                    gu[e] = 0.5 * g

        _KERNEL = kernel
    return _KERNEL


_KERNEL = None


def marginal_loglik(st: EdgeStats, group, tk, td, effect_sd: float, grad: bool = False):
    """Marginal log-likelihood (up to a constant) of every edge's unit means, summed over edges.

    ``tk``/``td``: between-dataset/between-drug sds per group; ``group``: each edge's group.
    Collapses the tree (units -> drugs -> overall) edge by edge, O(E K) (numba; serial, as chains
    run in processes). With ``grad``, also returns the gradients with respect to ``tk`` and ``td``, from
    dL/dtheta = 0.5 (a' dS a - tr(S^-1 dS)) with a = S^-1 y, written with the posterior means
    and variances of the drug effects.
    """
    tk, td = np.asarray(tk, dtype=float), np.asarray(td, dtype=float)
    n_edges = st.ybar.shape[1]
    tk2 = tk[group] ** 2 if st.use_dataset_level else np.zeros(n_edges)
    u = td[group] ** 2 if st.use_drug_level else np.zeros(n_edges)
    ll, gt, gu = np.empty(n_edges), np.zeros(n_edges), np.zeros(n_edges)
    _kernel()(st.ybar, st.s2, st.unit_drug.astype(np.int64), len(st.drugs), tk2, u, float(effect_sd) ** 2,
              st.use_drug_level, grad, ll, gt, gu, np.empty((n_edges, 5, len(st.drugs))))
    total = float(ll.sum())
    if not grad:
        return total
    n_groups = len(tk)
    g_k = np.bincount(group, gt * 2 * tk[group], minlength=n_groups) if st.use_dataset_level else np.zeros(n_groups)
    g_d = np.bincount(group, gu * 2 * td[group], minlength=n_groups) if st.use_drug_level else np.zeros(n_groups)
    return total, g_k, g_d


def _marginal_ops():
    """PyTensor Ops wrapping :func:`marginal_loglik` (built lazily: pytensor is imported on use)."""
    import pytensor.tensor as pt
    from pytensor.graph.op import Op
    from pytensor.graph.basic import Apply

    class MarginalLogLikGrad(Op):
        def __init__(self, st, group, n_groups, effect_sd):
            self.st, self.group, self.n_groups, self.effect_sd = st, group, n_groups, effect_sd

        def make_node(self, tk, td):
            tk, td = pt.as_tensor_variable(tk), pt.as_tensor_variable(td)
            return Apply(self, [tk, td], [tk.type(), td.type()])

        def perform(self, node, inputs, outputs):
            hit = self.cache.get("x")
            if hit is not None and np.array_equal(hit[0], inputs[0]) and np.array_equal(hit[1], inputs[1]):
                gk, gd = self.cache["g"]
            else:
                _, gk, gd = marginal_loglik(self.st, self.group, inputs[0], inputs[1], self.effect_sd, grad=True)
            outputs[0][0] = gk.astype(node.outputs[0].dtype)
            outputs[1][0] = gd.astype(node.outputs[1].dtype)

    class MarginalLogLik(Op):
        def __init__(self, st, group, n_groups, effect_sd):
            self.st, self.group, self.n_groups, self.effect_sd = st, group, n_groups, effect_sd
            self.grad_op = MarginalLogLikGrad(st, group, n_groups, effect_sd)
            # NUTS asks for the value and the gradient at the same point: compute both once
            self.cache = self.grad_op.cache = {}

        def make_node(self, tk, td):
            tk = pt.as_tensor_variable(tk).astype("float64")
            td = pt.as_tensor_variable(td).astype("float64")
            return Apply(self, [tk, td], [pt.dscalar()])

        def perform(self, node, inputs, outputs):
            ll, gk, gd = marginal_loglik(self.st, self.group, inputs[0], inputs[1], self.effect_sd, grad=True)
            self.cache["x"] = (np.array(inputs[0]), np.array(inputs[1]))
            self.cache["g"] = (gk, gd)
            outputs[0][0] = np.asarray(ll)

        def grad(self, inputs, output_grads):
            gk, gd = self.grad_op(*inputs)
            return [output_grads[0] * gk, output_grads[0] * gd]

    # module-level names so the Ops pickle (PyMC sends the model to its chain processes)
    MarginalLogLikGrad.__qualname__ = MarginalLogLikGrad.__name__ = "MarginalLogLikGradOp"
    MarginalLogLik.__qualname__ = MarginalLogLik.__name__ = "MarginalLogLikOp"
    _OPS.update(MarginalLogLikOp=MarginalLogLik, MarginalLogLikGradOp=MarginalLogLikGrad)
    return MarginalLogLik


_OPS: dict = {}


def __getattr__(name):  # PEP 562: build the Ops on first use, also when unpickling
    if name in ("MarginalLogLikOp", "MarginalLogLikGradOp"):
        if not _OPS:
            _marginal_ops()
        return _OPS[name]
    raise AttributeError(name)


def MarginalLogLik(st, group, n_groups, effect_sd):
    if not _OPS:
        _marginal_ops()
    return _OPS["MarginalLogLikOp"](st, group, n_groups, effect_sd)


class PyMCEdgePooling(PoolingModel):
    """Edge-level hierarchical model (per-dataset summaries, collapsed Gaussian hierarchy, NUTS on variances)."""

    name = "pymc_edges"
    packages = PYMC_PACKAGES

    @property
    def references(self) -> list[str]:
        return bayesian_references(self.config, auto="pymc")
    needs_connectomes = True
    needs_pairs = True

    @dataclass
    class Config(NUTSConfig):
        #: The sds are few and, with tens of thousands of edges, sharply identified: few draws suffice.
        draws: int = 500
        tune: int = 500
        cores: int = 2
        target_accept: float = 0.9
        #: Hyperparameter draws (over all chains, thinned evenly) for which edge effects are drawn.
        conditional_draws: int = 400
        #: Between-drug/dataset sds: one for all edges (shared; 400 regions in ~2.5 min) or one
        #: per network pair (per_pair; > 10 min per chain at 400 regions).
        heterogeneity: PairedHeterogeneity = PairedHeterogeneity.shared
        #: Drug contrasts to report as "a-b" (network-pair rows only; edge_effects has none);
        #: empty: every pair of drugs.
        contrasts: list[str] = field(default_factory=list)
        #: rope: half-width of the region of practical equivalence (network summaries' p_rope).
        #: priors: effect_sd, drug_sd, dataset_sd are used; sigma_sd is not (standard errors
        #: are plugged in).

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        validate_sampler_config(c)
        if c.conditional_draws < 2 * c.chains:
            raise ConfigError(
                f"config key 'pooling.conditional_draws' is {c.conditional_draws}; expected at least "
                f"2 per chain ({2 * c.chains})"
            )
        if c.conditional_draws > c.draws * c.chains:
            raise ConfigError(
                f"config key 'pooling.conditional_draws' is {c.conditional_draws}; expected at most "
                f"draws x chains ({c.draws * c.chains})"
            )

    # ------------------------------------------------------------------ model
    def build_model(self, st: EdgeStats, group: np.ndarray, n_groups: int):
        import pymc as pm

        p = self.config.priors
        incidence = (st.unit_drug[None, :] == np.arange(len(st.drugs))[:, None]).astype(float)
        op = MarginalLogLik(st, group, n_groups, p.effect_sd)
        with pm.Model(coords={"group": np.arange(n_groups)}) as model:
            tau_k = pm.HalfNormal("tau_dataset", p.dataset_sd, dims="group") if st.use_dataset_level else None
            tau_d = pm.HalfNormal("tau_drug", p.drug_sd, dims="group") if st.use_drug_level else None
            zeros = np.zeros(n_groups)
            pm.Potential("marginal_loglik", op(tau_k if tau_k is not None else zeros,
                                               tau_d if tau_d is not None else zeros))
        return model, incidence

    def conditional_draws(self, st, incidence, group, tk, td, rng):
        """Exact Gaussian draws of mu (n, E) and a generator of each drug's beta (n, E)."""
        p = self.config.priors
        n = tk.shape[0]
        n_edges = st.ybar.shape[1]
        mu = np.empty((n, n_edges))
        cache = []
        for i in range(n):
            tk2 = (tk[i][group] ** 2)[None, :] if st.use_dataset_level else 0.0
            td2 = (td[i][group] ** 2)[None, :] if st.use_drug_level else 0.0
            m, W, mbar, P = collapse(st.ybar, st.s2, incidence, st.unit_drug, tk2, td2, st.use_drug_level)
            prec = P + 1.0 / p.effect_sd**2
            mu[i] = P * mbar / prec + rng.standard_normal(n_edges) / np.sqrt(prec)
            cache.append((m, W, td2))
        return mu, cache

    # ------------------------------------------------------------------ fit
    def pool(self, inputs: PoolingInputs) -> PoolingResult:
        if inputs.connectomes is None or inputs.atlas is None:
            raise InputError("pooling 'pymc_edges' needs the connectomes and atlas in its PoolingInputs")
        return self.fit_edges(inputs.pairs, inputs.seed, inputs.connectomes, inputs.atlas, inputs.scans)

    def fit(self, pairs: pd.DataFrame, seed: int) -> PoolingResult:
        """The earlier contract (``set_connectomes`` then ``fit``)."""
        if getattr(self, "connectomes", None) is None:
            raise InputError("pooling 'pymc_edges' needs the connectomes: call pool(PoolingInputs(...))")
        return self.fit_edges(pairs, seed, self.connectomes, self.atlas, self.scans)

    def fit_edges(self, pairs: pd.DataFrame, seed: int, connectomes: Any, atlas: Any,
                  scans: pd.DataFrame) -> PoolingResult:
        c = self.config
        level = pairs.attrs.get("level", "network")
        regions = atlas.regions
        if list(connectomes.labels) != list(regions["label"]):
            raise InputError("pooling 'pymc_edges': connectome labels do not match the atlas")
        t0 = time.perf_counter()
        st = edge_statistics(connectomes, scans)
        stats_seconds = time.perf_counter() - t0
        contrasts = (contrast_pairs(st.drugs, c.contrasts, absent_drugs(pairs), say=True)  # before sampling
                     if len(st.drugs) > 1 else [])

        # edges -> network pairs (network_a <= network_b, as in the network-pair table)
        net = regions[level].astype(str).to_numpy()
        na, nb = net[st.iu], net[st.ju]
        lo, hi = np.where(na <= nb, na, nb), np.where(na <= nb, nb, na)
        edge_pairs = pd.DataFrame({"a": lo, "b": hi})
        pair_codes = edge_pairs.groupby(["a", "b"], sort=True).ngroup().to_numpy()
        uniq = edge_pairs.drop_duplicates().sort_values(["a", "b"])
        pair_a, pair_b = list(uniq["a"]), list(uniq["b"])
        n_pairs = len(uniq)
        given = set(map(tuple, pairs[["network_a", "network_b"]].drop_duplicates().to_numpy().tolist()))
        if given and given < set(zip(pair_a, pair_b)):  # it models every edge: a choice of pairs would be ignored
            raise ConfigError(f"config key 'aggregate.pairs' chose {len(given)} of the {n_pairs} network pairs, but "
                              "pooling=pymc_edges models every edge of the atlas and cannot leave pairs out; set "
                              "aggregate.pairs=null, or use a network-pair model (e.g. pooling=pymc)")
        if c.heterogeneity == "per_pair":
            group, n_groups = pair_codes, n_pairs
        else:
            group, n_groups = np.zeros(len(pair_codes), dtype=int), 1

        rng = np.random.default_rng(seed)
        hyper = [v for v, use in (("tau_drug", st.use_drug_level), ("tau_dataset", st.use_dataset_level)) if use]
        n_per_chain = c.conditional_draws // c.chains
        sampler = resolve_sampler(c, auto="pymc")
        model, incidence = self.build_model(st, group, n_groups)
        t1 = time.perf_counter()
        if hyper:
            idata = sample(model, c, sampler, seed)
            post = idata.posterior
            n_chains, n_draw = post.sizes["chain"], post.sizes["draw"]
            idx = np.linspace(0, n_draw - 1, n_per_chain).round().astype(int)

            def take(name):
                if name not in post:
                    return np.zeros((n_chains * n_per_chain, n_groups))
                return post[name].to_numpy()[:, idx].reshape(n_chains * n_per_chain, n_groups)

            tk, td = take("tau_dataset"), take("tau_drug")
            divergences = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0
            diagnostics = sampler_diagnostics(idata, hyper, c.rhat_max, ess_threshold(c))
        else:  # one dataset unit per drug and a single drug: no hyperparameters to sample
            idata, divergences, n_chains = None, 0, c.chains
            tk = td = np.zeros((n_chains * n_per_chain, n_groups))
            diagnostics = pd.DataFrame()
        sample_seconds = time.perf_counter() - t1

        t2 = time.perf_counter()
        mu, cache = self.conditional_draws(st, incidence, group, tk, td, rng)
        # network-pair means of edge effects, draw by draw
        from scipy import sparse

        counts = np.bincount(pair_codes, minlength=n_pairs)
        agg = sparse.csr_matrix((1.0 / counts[pair_codes], (np.arange(len(pair_codes)), pair_codes)),
                                shape=(len(pair_codes), n_pairs))
        shape3 = (n_chains, n_per_chain)
        edge_tables, net_blocks = [], []
        labels = regions["label"].astype(str).to_numpy()
        edge_meta = dict(region_a=labels[st.iu], region_b=labels[st.ju], network_a=na, network_b=nb)
        alpha = (1 - c.hdi_prob) / 2

        def add(effect, etype, lvl, draws):
            q = np.quantile(draws, [alpha, 1 - alpha], axis=0)
            pos = (draws > 0).mean(axis=0)
            t = pd.DataFrame({**edge_meta, "effect": effect, "mean": draws.mean(axis=0), "sd": draws.std(axis=0, ddof=1),
                              "hdi_low": q[0], "hdi_high": q[1], "pd": np.maximum(pos, 1 - pos)})
            edge_tables.append(t)
            net = np.asarray(agg.T @ draws.T).T  # (n, pairs)
            net_blocks.append((effect, etype, lvl, net.reshape(*shape3, n_pairs)))

        add("overall", "overall", "", mu)
        for j, drug in enumerate(st.drugs):
            if st.use_drug_level:
                beta = np.empty_like(mu)
                for i, (m, W, td2) in enumerate(cache):
                    prec = W[j] + 1.0 / td2[0]
                    beta[i] = (W[j] * m[j] + mu[i] / td2[0]) / prec + rng.standard_normal(mu.shape[1]) / np.sqrt(prec)
            else:
                beta = mu
            add(f"drug:{drug}", "drug", drug, beta)
            del beta
        del mu, cache
        # contrasts of the drugs' network-pair means, draw by draw (edge-level ones would double
        # the largest arrays of the run)
        drug_means = {lvl: draws for _, etype, lvl, draws in net_blocks if etype == "drug"}
        net_blocks += [(f"contrast:{a}-{b}", "contrast", f"{a}-{b}", drug_means[a] - drug_means[b])
                       for a, b in contrasts]
        edge_effects = pd.concat(edge_tables, ignore_index=True)
        edge_effects.attrs["compress"] = True

        systems = atlas.systems(level)
        contrasted = {f"{a}-{b}": [a, b] for a, b in contrasts}
        rows = []
        for effect, etype, lvl, draws in net_blocks:
            s = summarise_draws(draws, hdi_prob=c.hdi_prob)
            flat = draws.reshape(-1, n_pairs)
            s.insert(0, "level", lvl)
            s.insert(0, "effect_type", etype)
            s.insert(0, "effect", effect)
            s.insert(0, "system_b", [systems[b] for b in pair_b])
            s.insert(0, "system_a", [systems[a] for a in pair_a])
            s.insert(0, "network_b", pair_b)
            s.insert(0, "network_a", pair_a)
            s["p_rope"] = (np.abs(flat) <= c.rope).mean(axis=0) if c.rope else np.nan
            s["n_edges"] = counts
            in_effect = st.drugs if etype == "overall" else contrasted.get(lvl, [lvl])
            n_obs = int(st.n[np.isin(st.unit_drug, [st.drugs.index(d) for d in in_effect])].sum())
            s["n_obs"] = n_obs
            rows.append(s)
        effects = pd.concat(rows, ignore_index=True)
        effects["divergences"] = divergences
        effects["ok"] = flag_ok(effects, c.rhat_max, ess_threshold(c))
        first = ["network_a", "network_b", "effect", "effect_type", "level", "mean", "sd", "hdi_low", "hdi_high",
                 "pd", "r_hat", "ess_bulk", "ess_tail", "divergences", "ok"]
        effects = effects[first + [x for x in effects.columns if x not in first]]
        draw_seconds = time.perf_counter() - t2
        if len(diagnostics):
            diagnostics["stats_seconds"] = round(stats_seconds, 2)
            diagnostics["sampling_seconds"] = round(sample_seconds, 2)
            diagnostics["conditional_seconds"] = round(draw_seconds, 2)

        warnings = list(st.warnings)
        if divergences:
            warnings.append(f"pooling: {divergences} divergent transitions; posteriors may be biased")
        warnings += [w for w in [rhat_warning(diagnostics, c.rhat_max), bfmi_warning(diagnostics)] if w]
        warnings += [f"pooling: {n}" for n in st.notes()]
        return PoolingResult(
            effects=effects, diagnostics=diagnostics, idata=idata,
            description=self.describe_fit(st, n_pairs, sampler if hyper else "none", level),
            warnings=warnings, tables={"edge_effects": edge_effects}, interval=f"{100 * c.hdi_prob:g}% HDI",
            columns={"edge_effects": {
                "region_a": ("First region of the edge (atlas label).", None),
                "region_b": ("Second region of the edge.", None),
                "hdi_low": (f"Lower end of the edge's equal-tailed {100 * c.hdi_prob:g}% credible interval (not an "
                            "HDI: the edge effects are drawn, not summarised with their diagnostics).", "Fisher z"),
                "hdi_high": ("Upper end of that interval.", "Fisher z")}},
            sampler_ok=sampler_healthy(diagnostics), adjusted_for=[],
        )

    def describe_fit(self, st: EdgeStats, n_pairs: int, sampler: str, level: str) -> str:
        c, p = self.config, self.config.priors
        het = "one per " + level + " pair" if c.heterogeneity == "per_pair" else "shared by all edges"
        return (
            f"PyMC edge-level model: for each of {st.ybar.shape[1]} region pairs (edges), the mean "
            f"within-subject drug-minus-control Fisher-z difference in each of {len(st.units)} datasets "
            f"({int(st.n.sum())} drug scans, {len(st.drugs)} drugs) was modelled with its squared standard "
            f"error treated as known (two-stage approximation), dataset effects partially pooled around "
            f"their drug's effect and drug effects around the edge's overall effect ~ Normal(0, {p.effect_sd}); "
            f"between-drug sd ~ HalfNormal({p.drug_sd}) and between-dataset sd ~ HalfNormal({p.dataset_sd}), "
            f"{het}. Dataset, drug and overall effects were integrated out analytically; NUTS ({sampler} "
            f"sampler, {c.chains} chains x {c.draws} draws after {c.tune} tuning steps) sampled only the sds, "
            f"and for {c.conditional_draws} thinned sd draws the overall and drug effects of every edge were "
            f"drawn from their exact Gaussian conditionals. Edge intervals (edge_effects.tsv.gz) are "
            f"equal-tailed {100 * c.hdi_prob:g}% credible intervals; {level}-pair effects are the mean "
            f"edge effect over the pair's edges ({n_pairs} pairs), computed draw by draw, with "
            f"{100 * c.hdi_prob:g}% HDIs and R-hat/ESS of those draws."
        )
