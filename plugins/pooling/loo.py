"""Pointwise log-likelihoods for ``az.loo`` / ``az.compare``: one value per subject and draw.

Models that integrate the effects out have no observed variable, so ArviZ cannot compute
PSIS-LOO from them. Here every model scores the same data, each subject's drug-minus-control
differences (each drug scan minus the mean of the subject's control scans), over every network
pair, given the draw's dataset effects, covariate slopes and residual sds. The unit left out is
a subject; subjects without both a drug and a control scan are not scored. ``pymc`` (scan
level) and ``pymc_paired`` then rank on one scale with ``az.compare``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

#: Draws handled at once (bounds memory at ~draws x pairs x differences doubles).
CHUNK = 100


def subject_differences(obs: pd.DataFrame, y: np.ndarray, x: np.ndarray) -> dict | None:
    """Each drug scan minus its subject's mean control scan, for outcomes ``y`` and covariates ``x``.

    Returns ``d`` (n_diff, P), ``dx`` (n_diff, Q), ``row`` (index of the drug scan), ``subject``
    (subject number of each difference), ``subjects`` (their ``dataset/subject`` ids) and
    ``n_control`` (control scans per subject); None when no subject has both kinds of scan.
    """
    key = (obs["dataset"].astype(str) + "/" + obs["subject"].astype(str)).to_numpy()
    is_drug = (obs["condition"] == "drug").to_numpy()
    rows, ctrl_means, ctrl_x, subj, n_ctrl = [], [], [], [], {}
    order: dict[str, int] = {}
    for k in dict.fromkeys(key):
        members = np.flatnonzero(key == k)
        drugs, controls = members[is_drug[members]], members[~is_drug[members]]
        if not len(drugs) or not len(controls):
            continue
        order[k] = len(order)
        n_ctrl[k] = len(controls)
        for r in drugs:
            rows.append(r)
            ctrl_means.append(y[controls].mean(axis=0))
            ctrl_x.append(x[controls].mean(axis=0) if x.shape[1] else np.zeros(0))
            subj.append(order[k])
    if not rows:  # e.g. every dataset parallel-group: no within-subject difference to score
        return None
    rows = np.asarray(rows, dtype=int)
    return {
        "d": y[rows] - np.asarray(ctrl_means).reshape(len(rows), -1),
        "dx": (x[rows] - np.asarray(ctrl_x).reshape(len(rows), -1)) if x.shape[1] else np.zeros((len(rows), 0)),
        "row": rows, "subject": np.asarray(subj, dtype=int), "subjects": list(order),
        "n_control": np.array([n_ctrl[k] for k in order], dtype=float),
    }


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, *a.shape[2:])


def sample_dataset_effects(post) -> np.ndarray:
    """(chain, draw, dataset, pair) dataset effects of the datasets' samples of subjects, what
    their scans were drawn from (the posterior's ``dataset_effect`` are their populations'):
    for the scans' likelihood and predictive checks."""
    theta = post["dataset_effect"].to_numpy()
    if "dataset_population_factor" in post:
        theta = theta / post["dataset_population_factor"].to_numpy()[..., None]
    return theta


def scan_model_loglik(design, post, x: np.ndarray, names: list[str], scales: dict[str, float],
                      is_pair: np.ndarray, pair_labels: list[str]) -> xr.DataArray | None:
    """Subjects' log-likelihood under the scan-level model (subject intercepts integrated out).

    A subject's differences share the mean control scan, so they are jointly Gaussian with
    covariance sigma^2 (I + 11'/n_control): closed-form inverse and determinant.
    """
    sd = subject_differences(design.obs, design.y[:, is_pair], x)
    if sd is None:
        return None
    theta = _flat(sample_dataset_effects(post))[..., is_pair]  # (S, U, P): the samples', not the populations'
    sigma = _flat(post["sigma"].to_numpy())[..., is_pair]  # (S, K, P)
    slopes = [(_flat(post[f"slope:{n}"].to_numpy())[..., is_pair], 1.0 if n.startswith("dose:") else scales.get(n, 1.0))
              for n in names]
    unit = design.unit_idx[sd["row"]]
    site = design.dataset_idx[sd["row"]]
    starts = np.flatnonzero(np.r_[True, np.diff(sd["subject"]) != 0])  # differences come in subject blocks
    n_d = np.diff(np.r_[starts, len(sd["row"])]).astype(float)
    n_c = sd["n_control"]
    sub_site = site[starts]
    out = np.empty((theta.shape[0], len(starts), theta.shape[-1]), dtype=np.float32)
    for s0 in range(0, theta.shape[0], CHUNK):
        s = slice(s0, s0 + CHUNK)
        mean = theta[s][:, unit, :]
        for q, (b, factor) in enumerate(slopes):
            mean = mean + sd["dx"][None, :, q, None] * (b[s] * factor)[:, None, :]
        r = sd["d"][None] - mean  # (s, n_diff, P)
        sum_r = np.add.reduceat(r, starts, axis=1)
        sum_r2 = np.add.reduceat(r * r, starts, axis=1)
        var = sigma[s][:, sub_site, :] ** 2  # (s, n_sub, P)
        quad = (sum_r2 - sum_r**2 / (n_c + n_d)[None, :, None]) / var
        logdet = n_d[None, :, None] * np.log(var) + np.log1p(n_d / n_c)[None, :, None]
        out[s] = -0.5 * (quad + logdet + n_d[None, :, None] * np.log(2 * np.pi))
    return _as_dataarray(out, post, sd["subjects"], pair_labels)


def paired_model_loglik(design, post, covariates: dict[str, np.ndarray], is_pair: np.ndarray,
                        pair_labels: list[str], likelihood: str = "normal") -> xr.DataArray:
    """Subjects' log-likelihood under ``pymc_paired`` (independent differences), summed per subject."""
    from scipy import stats

    key = (design.obs["dataset"].astype(str) + "/" + design.obs["subject"].astype(str)).to_numpy()
    order = np.argsort(key, kind="stable")  # rows of one subject together
    starts = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1]])
    subjects = list(key[order][starts])
    theta = _flat(post["dataset_effect"].to_numpy())[..., is_pair]
    sigma = _flat(post["sigma"].to_numpy())
    sigma = (sigma[..., is_pair] if sigma.ndim == 2 else np.broadcast_to(sigma[:, None], (len(sigma), is_pair.sum())))
    betas = [(x[order], _flat(post[f"beta_{name}"].to_numpy())[..., is_pair]) for name, x in covariates.items()]
    nu = _flat(post["nu"].to_numpy()) if likelihood == "student_t" else None
    y = design.y[order][:, is_pair]
    units = design.unit_idx[order]
    out = np.empty((theta.shape[0], len(subjects), theta.shape[-1]), dtype=np.float32)
    for s0 in range(0, theta.shape[0], CHUNK):
        s = slice(s0, s0 + CHUNK)
        mean = theta[s][:, units, :]
        for x, b in betas:
            mean = mean + x[None, :, None] * b[s][:, None, :]
        z = (y[None] - mean) / sigma[s][:, None, :]
        if nu is None:
            ll = stats.norm.logpdf(z) - np.log(sigma[s])[:, None, :]
        else:
            ll = stats.t.logpdf(z, df=nu[s][:, None, None]) - np.log(sigma[s])[:, None, :]
        out[s] = np.add.reduceat(ll, starts, axis=1)
    return _as_dataarray(out, post, subjects, pair_labels)


def _as_dataarray(values: np.ndarray, post, subjects: list[str], pairs: list[str]) -> xr.DataArray:
    """(chain, draw, subject, pair), subjects sorted so every model lists them in one order."""
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    order = np.argsort(subjects, kind="stable")
    return xr.DataArray(values[:, order].reshape(n_chain, n_draw, len(subjects), -1),
                        dims=("chain", "draw", "subject", "pair"),
                        coords={"chain": post["chain"].values, "draw": post["draw"].values,
                                "subject": [subjects[i] for i in order], "pair": pairs},
                        name="subject_differences")


def thinned(post, max_draws: int):
    """The posterior at ``max_draws`` draws in all, evenly spaced within each chain."""
    per_chain = max(1, max_draws // post.sizes["chain"])
    if post.sizes["draw"] <= per_chain:
        return post
    return post.isel(draw=np.linspace(0, post.sizes["draw"] - 1, per_chain).round().astype(int))


def log_likelihood_group(loglik: xr.DataArray | None, unit: str) -> xr.DataArray | None:
    """The pointwise log-likelihood to store: per subject and network pair (``subject_pair``),
    summed over pairs (``subject``: leave one subject out; PSIS is often unreliable then) or none."""
    if unit == "none" or loglik is None:
        return None
    if unit == "subject":
        loglik = loglik.sum("pair").rename("subject_differences")
    # thinned draws are close to independent: az.loo(idata, reff=1) treats them so (without
    # reff, ArviZ divides the full posterior's ESS by the thinned count)
    loglik.attrs["reff"] = 1.0
    return loglik


def tidy_posterior(idata, loglik: xr.DataArray | None = None, observed: dict[str, xr.DataArray] | None = None):
    """The InferenceData a user opens: no warmup groups, no sampler-space variables, float32 draws,
    the subjects' log-likelihood (for ``az.loo``) and the observed outcomes added."""
    for group in [g for g in idata.groups() if g.startswith("warmup")]:
        delattr(idata, group)
        idata._groups_warmup = [g for g in getattr(idata, "_groups_warmup", []) if g != group]
    post = idata.posterior
    # sampler-space variables: log/zero-sum transforms (``*__``) and standard-normal innovations
    # of non-centred sds and slopes (``*_z``); the named quantities derived from them stay
    internal = [v for v in post.data_vars if v.endswith("__") or v.endswith("_z")]
    post = post.drop_vars(internal)
    unused = [d for d in post.coords if d not in ("chain", "draw") and not any(d in post[v].dims for v in post.data_vars)]
    # float32 keeps 7 significant digits, far finer than any posterior sd, at half the file size
    post = post.drop_vars(unused)
    idata.posterior = post.assign({v: post[v].astype("float32") for v in post.data_vars if post[v].dtype == "float64"})
    groups = {}
    if loglik is not None:
        groups["log_likelihood"] = xr.Dataset({loglik.name: loglik})
    if observed:
        groups["observed_data"] = xr.Dataset(observed)
    for name, data in groups.items():
        if name in idata.groups():  # e.g. PyMC's own observed_data: keep it, add ours
            setattr(idata, name, getattr(idata, name).merge(data, compat="override"))
        else:
            idata.add_groups({name: data})
    return idata
