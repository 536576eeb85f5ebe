import subprocess
import sys
import types

import pytest

from megafc.core import ConnectivityEstimator, PluginError, hookimpl
from megafc.core.registry import build_registry, config_node


def plugin_module(*classes, hook="megafc_estimators"):
    mod = types.ModuleType("fake_plugin")
    setattr(mod, hook, hookimpl(lambda: list(classes)))
    return mod


def test_builtins_register_through_entry_points():
    reg = build_registry()
    assert {"correlation", "ledoit_wolf"} <= set(reg.plugins["estimator"])
    assert {"pymc", "bambi"} <= set(reg.plugins["pooling"])
    info = reg.get("estimator", "correlation")
    assert info.distribution == "megafc" and info.version
    assert info.location == "megafc.plugins.estimators.correlation:FisherZCorrelation"


def test_duplicate_names_are_refused():
    class Dup(ConnectivityEstimator):
        name = "correlation"

    with pytest.raises(PluginError, match="'correlation' is registered twice"):
        build_registry(extra_plugins=[plugin_module(Dup)])


def test_hook_must_return_plugin_classes():
    with pytest.raises(PluginError, match="expected a subclass of megafc.core.ConnectivityEstimator"):
        build_registry(extra_plugins=[plugin_module(object)], entry_points=False)

    class NoName(ConnectivityEstimator):
        pass

    with pytest.raises(PluginError, match="name must be"):
        build_registry(extra_plugins=[plugin_module(NoName)], entry_points=False)


def test_config_node_adds_the_selector():
    import dataclasses

    reg = build_registry()
    node = config_node(reg.get("estimator", "ledoit_wolf"))
    assert {f.name for f in dataclasses.fields(node)} == {"name", "shrinkage"}
    assert node().name == "ledoit_wolf"


def test_core_imports_no_plugin_module():
    code = (
        "import sys, megafc.core, megafc.core.pipeline, megafc.core.registry, megafc.core.app;"
        "bad = [m for m in sys.modules if m.startswith('megafc.plugins')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_source_names_no_plugin():
    from pathlib import Path

    import megafc.core

    for path in Path(megafc.core.__file__).parent.glob("*.py"):
        assert "megafc.plugins" not in path.read_text(), path
