"""nutpie's compiled model is reused for the same model with other data, and only then."""

import numpy as np
import pandas as pd
import pytest

from megafc.plugins.datasets.synthetic import SiteSpec
from megafc.plugins.pooling import compiled_models
from megafc.plugins.pooling.pymc_scan_level import PyMCPooling, ScanPriors
from simulation import SMALL_ATLAS, simulate_pairs

SITES = [SiteSpec("a", "LSD", 8), SiteSpec("b", "psilocybin", 8), SiteSpec("c", "psilocybin", 8, design="prepost")]
TINY = dict(draws=60, tune=60, chains=2, cores=2, progressbar=False, sampler="nutpie", predictive_checks=False,
            log_likelihood="none", max_treedepth=5)


def study(seed: int, sites=SITES) -> pd.DataFrame:
    return simulate_pairs(scale=1.0, n_volumes=60, sites=sites, seed=seed, atlas=SMALL_ATLAS, paired=False)[0]


class Counting:
    """Stands in for ``nutpie.compile_pymc_model``: counts compilations, optionally really compiling."""

    def __init__(self, real=None):
        self.real, self.calls = real, 0

    def __call__(self, model, var_names=None):
        self.calls += 1
        if self.real is not None:
            return self.real(model, var_names=var_names)
        return FakeCompiled()


class FakeCompiled:
    shared_data = {"scan_statistics_floats": None, "scan_statistics_ints": None, "covariate_scale:mean_fd": None}

    def with_data(self, **data):
        return ("reused", data)


@pytest.fixture
def fresh_cache():
    """No compilation kept from other tests, and none left behind (also when a test fails)."""
    compiled_models.forget()
    yield
    compiled_models.forget()


def model_of(pairs: pd.DataFrame, **options):
    plugin = PyMCPooling(PyMCPooling.Config(**TINY, **options))
    p = plugin.prepare(pairs)
    return plugin.build_model(p.design, p.statistics, p.names, p.scales, p.is_summary)


def test_only_the_same_graph_with_other_data_is_reused(monkeypatch, fresh_cache):
    """Other values (and motion scales) reuse the compilation, with the new data swapped in;
    another set of sites (coordinates, shapes), another model option or another prior constant
    (same variables and shapes, so only the graph comparison tells) compiles afresh."""
    import nutpie

    counting = Counting()
    monkeypatch.setattr(nutpie, "compile_pymc_model", counting)
    first = compiled_models.compiled_model(model_of(study(0)))
    assert isinstance(first, FakeCompiled) and counting.calls == 1
    other = model_of(study(1))
    tag, data = compiled_models.compiled_model(other)
    assert tag == "reused" and counting.calls == 1
    assert set(data) == set(FakeCompiled.shared_data)
    assert data["covariate_scale:mean_fd"] != compiled_models._signature(model_of(study(0)), None)[3][
        "covariate_scale:mean_fd"]  # the new study's own motion scale, not the first one's
    compiled_models.compiled_model(model_of(study(1, sites=SITES[:2])))
    assert counting.calls == 2
    compiled_models.compiled_model(model_of(study(2), drug_scale=True))
    assert counting.calls == 3
    wider = model_of(study(3), priors=ScanPriors(effect_sd=0.3))
    assert compiled_models._signature(wider, None)[0] == compiled_models._signature(model_of(study(3)), None)[0]
    compiled_models.compiled_model(wider)
    assert counting.calls == 4
    assert len(compiled_models._compiled) <= compiled_models.KEPT


@pytest.mark.slow
def test_a_reused_compilation_samples_exactly_as_a_fresh_one(monkeypatch, fresh_cache):
    """Fit study A (compiled), then study B on A's compilation, then B compiled afresh: B's two
    fits give the same draws, so the reused model really uses B's data."""
    import nutpie

    counting = Counting(nutpie.compile_pymc_model)
    monkeypatch.setattr(nutpie, "compile_pymc_model", counting)
    a, b = study(0), study(1)
    model = PyMCPooling(PyMCPooling.Config(**TINY))
    fit_a = model.fit(a, seed=4)
    reused = model.fit(b, seed=4)
    assert counting.calls == 1
    compiled_models.forget()
    fresh = model.fit(b, seed=4)
    assert counting.calls == 2
    pd.testing.assert_frame_equal(reused.effects, fresh.effects)
    assert not np.allclose(fit_a.effects["mean"], fresh.effects["mean"])
    assert fresh.adjusted_for == ["mean_fd", "session_order"]  # what core's motion warning reads
