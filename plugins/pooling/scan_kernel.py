"""The scan-level marginal likelihood and its gradient as one numba kernel (a PyTensor Op).

The same function as :func:`.scan_model.marginal_loglik` (tests hold the two equal, value and
gradient), computed pair by pair with loops over a handful of numbers instead of batched
small-matrix algebra, which PyTensor runs ~30x slower. Per pair it passes Gaussian messages
up the tree: each dataset's (H_k, g_k) on its units' effects, integrated over the dataset
level into a message on the drug effects, then over the drug level onto the overall effect,
then over its prior. One message pass, for a child with precision H and score g whose
prior is Normal(parent, t I) (t = tau^2), is, with A = I + t H and M = A^-1::

    precision M H, score M g on the parent;   log-constant -log|A| / 2 + t g'M g / 2

which is stable as t -> 0 (A -> I). The gradient is the same recursion run backwards.
The Op registers a numba implementation, so nutpie compiles it into its logp function.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .scan_model import ScanStatistics

_KERNEL = None


def kernel_arrays(st: ScanStatistics) -> tuple:
    """The statistics as contiguous float/int arrays in the kernel's argument order."""
    n_ds = st.sxx.shape[0]
    m_max = st.sxx.shape[2] - 1
    units = -np.ones((n_ds, max(m_max, 1)), dtype=np.int64)
    for u, (k, slot) in enumerate(zip(st.unit_dataset, st.unit_slot)):
        units[k, slot - 1] = u
    m_units = (units >= 0).sum(axis=1).astype(np.int64)
    c = np.ascontiguousarray
    return (c(st.sxx), c(st.sxw), c(st.sww), c(st.sxy), c(st.swy), c(st.syy), c(st.sizes),
            c(st.n_subjects), m_units, units, c(st.unit_drug.astype(np.int64)), int(st.n_drugs))


def pack_statistics(arrays: tuple, n_outcomes: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`kernel_arrays` as the two flat arrays the compiled model takes (layout:
    :data:`.scan_numba.HEADER`)."""
    sxx, sxw, sww, sxy, swy, syy, sizes, n_subjects, m_units, units, unit_drug, n_drugs = arrays
    K, C, R = sxx.shape[:3]
    header = [K, C, R, sxw.shape[3], n_outcomes, len(unit_drug), units.shape[1], n_drugs]
    floats = np.concatenate([np.ravel(a) for a in (sxx, sxw, sww, sxy, swy, syy, sizes, n_subjects)]).astype(float)
    ints = np.concatenate([np.asarray(header), m_units, units.ravel(), unit_drug]).astype(np.int64)
    return floats, ints


def get_kernel():
    """(kernel, draws) from :mod:`.scan_numba`, imported on first use (numba is heavy)."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    from . import scan_numba

    _KERNEL = (scan_numba.kernel, scan_numba.draws)
    return _KERNEL


#: The differentiable inputs, in order: sds (K, P), slopes (Q, P), taus (P,), the overall
#: effects' prior mean and sd (P,), the drugs' scales (D,) (drug d centred on scale x overall)
#: and the dataset units' scales (U,) (unit u centred on scale x its drug's effect).
INPUTS = ("sigma", "omega", "b", "tau_d", "tau_k", "prior_mean", "prior_sd", "lam_d", "lam_u")


def _contiguous(values) -> list[np.ndarray]:
    return [np.ascontiguousarray(x, dtype=float) for x in values]


def loglik_and_grad(arrays: tuple, sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd, lam_d=None, lam_u=None):
    """(log-likelihood, then its gradient with respect to each input of INPUTS) in numpy;
    ``lam_d`` / ``lam_u`` None: every drug's / unit's scale 1."""
    lam_d = np.ones(arrays[-1]) if lam_d is None else lam_d
    lam_u = np.ones(len(arrays[-2])) if lam_u is None else lam_u
    values = _contiguous((sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd, lam_d, lam_u))
    grads = [np.zeros_like(v) for v in values]
    ll = get_kernel()[0](*values, *arrays, *grads)
    return (ll, *grads)


def conditional_draws(arrays: tuple, sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd,
                      rng: np.random.Generator, lam_d=None, lam_u=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact conditional draws of the overall (N, P), drug (N, D, P) and unit (N, U, P) effects,
    one per draw of the sds (N, K, P), slopes (N, Q, P), taus and prior (N, P) (tau 0: level
    omitted), drug scales (N, D) and unit scales (N, U) (None: all 1)."""
    n, n_drugs, n_units = np.shape(sigma)[0], arrays[-1], len(arrays[-2])
    lam_d = np.ones((n, n_drugs)) if lam_d is None else lam_d
    lam_u = np.ones((n, n_units)) if lam_u is None else lam_u
    values = _contiguous((sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd, lam_d, lam_u))
    n_pairs = values[0].shape[2]
    xi = (rng.standard_normal((n, n_pairs)), rng.standard_normal((n, n_drugs, n_pairs)),
          rng.standard_normal((n, n_units, n_pairs)))
    out = (np.empty((n, n_pairs)), np.empty((n, n_drugs, n_pairs)), np.empty((n, n_units, n_pairs)))
    get_kernel()[1](*values, *arrays, *xi, *out)
    return out


_OPS: dict = {}
N_IN = len(INPUTS)


def _make_op():
    import pytensor.tensor as pt
    from pytensor.graph.basic import Apply
    from pytensor.graph.op import Op

    class ScanMarginalLogLik(Op):
        """Outputs the log-likelihood and its gradients; ``grad`` reuses the same node.

        The statistics are two data inputs (:func:`pack_statistics`, as shared variables), not
        properties, so one compiled model serves every dataset and its compiled form is cached
        on disk (PyTensor's numba cache).
        """

        __props__ = ()

        def make_node(self, *inputs):
            ins = [pt.as_tensor_variable(x).astype("float64") for x in inputs[:N_IN]]
            floats, ints = (pt.as_tensor_variable(a) for a in inputs[N_IN:])
            return Apply(self, [*ins, floats, ints], [pt.dscalar()] + [x.type() for x in ins])

        def perform(self, node, inputs, outputs):
            from . import scan_numba

            arrays = scan_numba.unpack(np.ascontiguousarray(inputs[N_IN], dtype=float),
                                       np.ascontiguousarray(inputs[N_IN + 1], dtype=np.int64))
            out = loglik_and_grad(arrays, *inputs[:N_IN])
            outputs[0][0] = np.asarray(out[0])
            for i, g in enumerate(out[1:]):
                outputs[i + 1][0] = g

        def grad(self, inputs, output_grads):
            from pytensor.gradient import disconnected_type

            grads = self(*inputs)[1:]
            return [output_grads[0] * g for g in grads] + [disconnected_type() for _ in inputs[N_IN:]]

        def connection_pattern(self, node):
            n_out = N_IN + 1
            return [[True] * n_out] * N_IN + [[False] * n_out] * (len(node.inputs) - N_IN)

    ScanMarginalLogLik.__module__ = __name__
    _OPS["ScanMarginalLogLik"] = ScanMarginalLogLik
    _register_numba(ScanMarginalLogLik)
    return ScanMarginalLogLik


#: The model calls the kernel's C entry point by this symbol name, not by its address: compiled
#: code holding an address cannot be cached on disk, code naming a symbol can.
KERNEL_SYMBOL = "megafc_scan_kernel_entry_v1"


def _export_kernel_symbol():
    """Make :data:`KERNEL_SYMBOL` name the kernel in this process; return its numba signature."""
    from llvmlite import binding as llvm

    from . import scan_numba

    llvm.add_symbol(KERNEL_SYMBOL, scan_numba.kernel_entry.address)
    return scan_numba.ENTRY_SIGNATURE


def _wrapper_cache_key() -> str:
    """Changes whenever the wrapper below, the packing or the kernel's C signature may have: the
    bytes of this file and of :mod:`.scan_numba` (a cached model must never call the kernel
    with an old argument layout)."""
    from pathlib import Path

    h = hashlib.sha256()
    for source in (Path(__file__), Path(__file__).with_name("scan_numba.py")):
        h.update(source.read_bytes())
    return "megafc-scan-kernel-" + h.hexdigest()


def _register_numba(op_class) -> None:
    """Let PyTensor's numba backend (nutpie) call the kernel directly, and cache the result."""
    try:
        import numba
        from pytensor.link.numba.dispatch.basic import register_funcify_and_cache_key
    except ImportError:  # pragma: no cover - numba ships with pytensor
        return

    @register_funcify_and_cache_key(op_class)
    def _funcify(op, node=None, **kwargs):
        entry = numba.types.ExternalFunction(KERNEL_SYMBOL, _export_kernel_symbol())

        @numba.njit
        def scan_marginal_loglik(sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd, lam_d, lam_u, floats, ints):
            values = (np.ascontiguousarray(sigma), np.ascontiguousarray(omega), np.ascontiguousarray(b),
                      np.ascontiguousarray(tau_d), np.ascontiguousarray(tau_k), np.ascontiguousarray(prior_mean),
                      np.ascontiguousarray(prior_sd), np.ascontiguousarray(lam_d), np.ascontiguousarray(lam_u))
            grads = (np.zeros_like(values[0]), np.zeros_like(values[1]), np.zeros_like(values[2]),
                     np.zeros_like(values[3]), np.zeros_like(values[4]), np.zeros_like(values[5]),
                     np.zeros_like(values[6]), np.zeros_like(values[7]), np.zeros_like(values[8]))
            packed = (np.ascontiguousarray(floats), np.ascontiguousarray(ints))
            ll = entry(values[0].ctypes, values[1].ctypes, values[2].ctypes, values[3].ctypes, values[4].ctypes,
                       values[5].ctypes, values[6].ctypes, values[7].ctypes, values[8].ctypes, packed[0].ctypes,
                       packed[1].ctypes, grads[0].ctypes, grads[1].ctypes, grads[2].ctypes, grads[3].ctypes,
                       grads[4].ctypes, grads[5].ctypes, grads[6].ctypes, grads[7].ctypes, grads[8].ctypes)
            return (np.asarray(ll), grads[0], grads[1], grads[2], grads[3], grads[4], grads[5], grads[6],
                    grads[7], grads[8])

        return scan_marginal_loglik, _wrapper_cache_key()


def __getattr__(name):  # PEP 562: build the Op class on first use, also when unpickling
    if name == "ScanMarginalLogLik":
        return _OPS.get(name) or _make_op()
    raise AttributeError(name)


def scan_marginal_loglik(st: ScanStatistics, sigma, omega, slopes, tau_d, tau_k, prior_mean, prior_sd,
                         drug_scale=None, unit_scale=None):
    """The marginal log-likelihood as a PyTensor expression (``slopes`` may be None;
    ``drug_scale`` (D,) None: every drug centred on the overall effect itself; ``unit_scale``
    (U,) None: every dataset unit centred on its drug's effect itself)."""
    import pytensor
    import pytensor.tensor as pt

    op_class = _OPS.get("ScanMarginalLogLik") or _make_op()
    q = st.sxw.shape[-1]
    b = slopes if slopes is not None else pt.zeros((q, sigma.shape[1]))
    lam = drug_scale if drug_scale is not None else pt.ones(st.n_drugs)
    lam_u = unit_scale if unit_scale is not None else pt.ones(st.n_units)
    floats, ints = pack_statistics(kernel_arrays(st), st.sxy.shape[-1])
    data = (pytensor.shared(floats, name="scan_statistics_floats"), pytensor.shared(ints, name="scan_statistics_ints"))
    return op_class()(sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd, lam, lam_u, *data)[0]
