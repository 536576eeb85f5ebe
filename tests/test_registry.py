import subprocess
import sys
import types

import pytest

from megafc.core import ConnectivityEstimator, PluginError, hookimpl
from megafc.core.config import config_node
from megafc.core.registry import build_registry


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
        "import sys, megafc.core, megafc.core.pipeline, megafc.core.registry, megafc.cli.app;"
        "bad = [m for m in sys.modules if m.startswith('megafc.plugins')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_source_names_no_plugin():
    from pathlib import Path

    import megafc.core

    for path in Path(megafc.core.__file__).parent.glob("*.py"):
        assert "megafc.plugins" not in path.read_text(), path


class FakeEntryPoint:
    """An entry point as importlib.metadata lists it; ``load`` may fail like a broken package."""

    def __init__(self, name, target, dist_name="lab-plugins"):
        self.name, self._target = name, target
        self.dist = types.SimpleNamespace(name=dist_name, version="0.3")

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def with_entry_points(monkeypatch, extra):
    import importlib.metadata

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: list(real(group=group)) + list(extra))


def test_a_broken_entry_point_costs_only_its_own_plugins(monkeypatch, caplog):
    from megafc.core import ConfigError

    good = types.ModuleType("lab_good")
    good.megafc_estimators = hookimpl(lambda: [type("LabCorr", (ConnectivityEstimator,), {"name": "lab_corr"})])
    with_entry_points(monkeypatch, [FakeEntryPoint("lab_broken", ImportError("No module named 'torch'"), "lab-broken"),
                                    FakeEntryPoint("lab_good", good)])
    with caplog.at_level("WARNING"):
        reg = build_registry()
    assert "correlation" in reg.plugins["estimator"] and "lab_corr" in reg.plugins["estimator"]
    assert reg.get("estimator", "lab_corr").distribution == "lab-plugins"
    assert reg.broken == [{"entry_point": "lab_broken", "distribution": "lab-broken",
                           "error": "ImportError: No module named 'torch'"}]
    assert "entry point 'lab_broken' of lab-broken could not be loaded" in caplog.text
    # the advice names the entry point: naming the distribution would switch off its working ones too
    assert "MEGAFC_DISABLE_PLUGINS=lab_broken skips it quietly" in caplog.text
    with pytest.raises(ConfigError, match=r"no estimator plugin named 'lab_net'.*'lab_broken' of lab-broken "
                                          r"could not be loaded \(ImportError"):
        reg.get("estimator", "lab_net")
    # named in MEGAFC_DISABLE_PLUGINS (by entry point or distribution): not loaded, not broken
    monkeypatch.setenv("MEGAFC_DISABLE_PLUGINS", "lab-broken, lab_good")
    quiet = build_registry()
    assert quiet.broken == [] and "lab_corr" not in quiet.plugins["estimator"]


def test_load_plugins_is_an_allow_list(monkeypatch):
    good = types.ModuleType("lab_good")
    good.megafc_estimators = hookimpl(lambda: [type("LabCorr", (ConnectivityEstimator,), {"name": "lab_corr"})])
    with_entry_points(monkeypatch, [FakeEntryPoint("lab_broken", ImportError("No module named 'torch'"), "lab-broken"),
                                    FakeEntryPoint("lab_good", good)])
    # by entry point (the built-in estimators, the lab's) and by distribution
    monkeypatch.setenv("MEGAFC_LOAD_PLUGINS", "estimators, lab-plugins")
    reg = build_registry()
    assert set(reg.plugins["estimator"]) >= {"correlation", "lab_corr"}
    assert reg.plugins["pooling"] == {} and reg.broken == []  # neither loaded nor tried
    monkeypatch.setenv("MEGAFC_LOAD_PLUGINS", "megafc")  # the built-ins alone
    reg = build_registry()
    assert "lab_corr" not in reg.plugins["estimator"] and {"pymc", "meta"} <= set(reg.plugins["pooling"])
    assert reg.broken == []


def test_a_name_no_plugin_has_in_the_switches_is_warned_about(monkeypatch, caplog, tmp_path):
    """A typo in MEGAFC_LOAD_PLUGINS / MEGAFC_DISABLE_PLUGINS would silently load other plugins
    than meant; a run whose reporters are left out says that it writes no report."""
    from megafc.core.outputs import write_reports

    monkeypatch.setenv("MEGAFC_LOAD_PLUGINS", "megafc, lab-plugin")
    with caplog.at_level("WARNING"):
        build_registry()
        build_registry()
    assert caplog.text.count("MEGAFC_LOAD_PLUGINS names lab-plugin, which is no installed megafc entry point") == 1
    monkeypatch.delenv("MEGAFC_LOAD_PLUGINS")
    monkeypatch.setenv("MEGAFC_DISABLE_PLUGINS", "reports")
    caplog.clear()
    with caplog.at_level("WARNING"):
        reg = build_registry()
        assert write_reports(reg, "run", tmp_path) == []
    assert "no installed megafc entry point" not in caplog.text  # 'reports' is the built-in reporters' entry point
    assert "no reporter plugin for run reports is loaded" in caplog.text


@pytest.mark.parametrize("variable", ["MEGAFC_TRACE_PLUGINS", "MEGAFC_TRACE_HOOKS"])
def test_hook_calls_can_be_traced(monkeypatch, capfd, variable):
    monkeypatch.setenv(variable, "1")
    build_registry().manager.hook.megafc_after_run(run_dir="/somewhere")
    err = capfd.readouterr().err
    assert "megafc hook:" in err and "megafc_after_run" in err and "/somewhere" in err
    # the plugin-class hooks, which the registry calls plugin by plugin, are traced too
    assert "megafc hook: megafc_estimators [estimators] -> ['correlation'" in err


def test_config_fields_list_keys_types_defaults_and_docs():
    from dataclasses import dataclass, field

    from megafc.core.plugin import config_fields

    @dataclass
    class Inner:
        #: how wide
        width: float = 0.5

    @dataclass
    class Base:
        #: how many
        n: int = 3
        undocumented: str = "x"

    @dataclass
    class Config(Base):
        n: int = 4  # redefined without a doc comment: keeps the base's
        #: nested settings
        inner: Inner = field(default_factory=Inner)

    rows = {r["key"]: r for r in config_fields(Config)}
    assert rows["n"] == {"key": "n", "type": "int", "default": 4, "doc": "how many"}
    assert rows["undocumented"]["doc"] == "" and rows["inner.width"]["doc"] == "how wide"
    assert rows["inner.width"]["default"] == 0.5 and "inner" not in rows


def test_a_broken_entry_points_whole_error_is_kept(monkeypatch):
    """pluggy's validation error says on its later lines which hook argument is wrong."""
    error = ValueError("Plugin 'lab_badhook' for hook 'megafc_estimators'\nhookimpl definition: f(x)\n"
                       "Argument(s) {'x'} are declared in the hookimpl but can not be found in the hookspec")
    with_entry_points(monkeypatch, [FakeEntryPoint("lab_badhook", error, "lab-bad")])
    (entry,) = build_registry().broken
    assert entry["error"].endswith("Argument(s) {'x'} are declared in the hookimpl but can not be found in the hookspec")
