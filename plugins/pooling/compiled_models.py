"""nutpie's compiled models, reused within a process when only the data change.

Compiling a model for nutpie takes ~15 s of a ~50 s fit at full size, nearly all of it numba
compiling nutpie's wrappers around the log-density. A calibration runs dozens of replicates of
one design in each worker process, and Hydra's joblib launcher reuses its workers across sweep
jobs: their models differ only in the values of their shared variables (the data), which
nutpie can swap into an already compiled model (``CompiledPyMCModel.with_data``).

A model is reused only when its log-density and stored deterministics are the same graph as the
earlier model's (``equal_computations``, constants compared by value, the value variables and
named shared variables matched by name), with the same coordinates and the same shapes; any
other difference compiles afresh.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

log = logging.getLogger("megafc")

#: How many compiled models a process keeps (a calibration worker alternates between few designs).
KEPT = 4

#: signature -> (graph outputs, graph inputs, compiled model), most recently used last.
_compiled: OrderedDict[tuple, tuple[list, list, Any]] = OrderedDict()


def _graph_inputs(outputs: list) -> list:
    try:
        from pytensor.graph.traversal import graph_inputs
    except ImportError:  # pytensor < 2.31
        from pytensor.graph.basic import graph_inputs
    return list(graph_inputs(outputs))


def _signature(model, var_names: list[str] | None) -> tuple[tuple | None, list, list, dict]:
    """(key, graph outputs, graph inputs, named shared variables' values) of ``model``; key None:
    never reuse (shared variables without unique names, which nutpie refuses anyway)."""
    import numpy as np
    from pytensor.compile.sharedvalue import SharedVariable

    kept = set(var_names) if var_names is not None else None
    stored = [d for d in model.deterministics if kept is None or d.name in kept]
    outputs = [model.logp(), *model.replace_rvs_by_values(stored)]
    shared = sorted((v for v in _graph_inputs(outputs) if isinstance(v, SharedVariable) and v.name),
                    key=lambda v: v.name)
    names = [v.name for v in shared]
    if len(set(names)) != len(names):
        return None, outputs, [], {}
    key = (
        tuple(v.name for v in model.value_vars),
        tuple((k, np.shape(v)) for k, v in model.initial_point().items()),
        tuple((rv.name, repr(v)) for rv, v in model.rvs_to_initial_values.items()),
        tuple(d.name for d in stored),
        tuple(sorted((k, tuple(v)) for k, v in model.named_vars_to_dims.items())),
        tuple(sorted((k, repr(tuple(v)) if v is not None else None) for k, v in model.coords.items())),
        tuple((v.name, str(v.type)) for v in shared),
        bool(model.check_bounds),
        tuple(var_names) if var_names is not None else None,
    )
    return key, outputs, [*model.value_vars, *shared], {v.name: v.get_value() for v in shared}


def compiled_model(model, var_names: list[str] | None = None):
    """nutpie's compiled ``model``: the earlier compilation of the same graph with this model's
    data, or a new one (kept for the next call, in place of an earlier one with the same key)."""
    import nutpie
    from pytensor.graph.basic import equal_computations

    try:
        key, outputs, inputs, data = _signature(model, var_names)
    except Exception:  # whatever cannot be compared is compiled, as it would be without reuse
        key = None
    if key is None:
        return nutpie.compile_pymc_model(model, var_names=var_names)
    if key in _compiled:
        old_outputs, old_inputs, compiled = _compiled[key]
        if equal_computations(outputs, old_outputs, in_xs=inputs, in_ys=old_inputs):
            _compiled.move_to_end(key)
            log.debug("pooling: reusing an earlier compilation of the same model with new data")
            return compiled.with_data(**{k: v for k, v in data.items() if k in compiled.shared_data})
    log.debug("pooling: compiling a model not seen in this process (%d kept)", len(_compiled))
    compiled = nutpie.compile_pymc_model(model, var_names=var_names)
    _compiled[key] = (outputs, inputs, compiled)
    _compiled.move_to_end(key)
    while len(_compiled) > KEPT:
        _compiled.popitem(last=False)
    return compiled


def forget() -> None:
    """Drop every kept compilation (tests compare a reused model with a fresh one)."""
    _compiled.clear()
