"""The plugin registry: the pluggy manager and entry-point loading (their configs reach Hydra's
ConfigStore through ``megafc.core.config.register_configs``)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError
from .plugin import PLUGIN_KINDS, Plugin, choice_fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin class and where it came from."""

    kind: str
    name: str
    cls: type[Plugin]
    distribution: str
    version: str

    @property
    def location(self) -> str:
        return f"{self.cls.__module__}:{self.cls.__qualname__}"


#: Comma-separated entry-point or distribution names: load only these (an allow-list, e.g.
#: ``MEGAFC_LOAD_PLUGINS=megafc`` for the built-ins alone, as datasette's DATASETTE_LOAD_PLUGINS).
LOAD_ENV = "MEGAFC_LOAD_PLUGINS"
#: Comma-separated entry-point or distribution names not to load (e.g. a plugin package that
#: breaks on import, or to check a run without some plugin's lifecycle hooks; pytest's -p no:).
DISABLE_ENV = "MEGAFC_DISABLE_PLUGINS"
#: Set to 1 to log every hook call (pluggy's tracing) to stderr; MEGAFC_TRACE_HOOKS is the
#: earlier name.
TRACE_ENV = "MEGAFC_TRACE_PLUGINS"
TRACE_ENV_OLD = "MEGAFC_TRACE_HOOKS"


def _names(variable: str) -> set[str] | None:
    """The comma-separated names in an environment variable; None when it is unset."""
    import os

    value = os.environ.get(variable)
    return None if value is None else {s.strip() for s in value.split(",") if s.strip()}


@dataclass
class Registry:
    """Every plugin class by kind and name, plus the pluggy manager for lifecycle hooks."""

    manager: pluggy.PluginManager
    plugins: dict[str, dict[str, PluginInfo]] = field(default_factory=dict)
    #: Entry points that could not be loaded: {entry_point, distribution, error}.
    broken: list[dict[str, str]] = field(default_factory=list)
    #: Registered plugin object -> (distribution, version), for entry-point plugins.
    distributions: dict[Any, tuple[str, str]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> PluginInfo:
        try:
            return self.plugins[kind][name]
        except KeyError:
            known = sorted(self.plugins.get(kind, {}))
            broken = "".join(f"; entry point '{b['entry_point']}' of {b['distribution']} could not be loaded "
                             f"({b['error']})" for b in self.broken)
            raise ConfigError(
                f"config key '{kind}': no {kind} plugin named '{name}'; installed: {known}{broken}"
            ) from None

    def instantiate(self, kind: str, node: Any) -> Plugin:
        """Build a plugin from its config node: ``name`` plus the fields of its ``Config``.

        ``node`` may be a DictConfig (from Hydra) or a plain mapping (from Python); either way
        values are type-checked against the plugin's ``Config`` dataclass.
        """
        from omegaconf import DictConfig, OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        name = values.pop("name", None)
        if name is None:
            raise ConfigError(f"config key '{kind}.name' is missing (which {kind} plugin to use)")
        info = self.get(kind, str(name))
        try:
            merged = OmegaConf.merge(OmegaConf.structured(info.cls.Config), values)
            config = OmegaConf.to_object(merged)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None)
            where = f" (config key '{kind}.{key}')" if key else ""
            raise ConfigError(f"{kind} plugin '{name}': {str(exc).splitlines()[0]}{where}") from exc
        return info.cls.from_config(config, self)

    def reporters(self, scope: str) -> list[Plugin]:
        """An instance of every installed reporter of this scope (``run``, ``sweep``, ``calibration``)."""
        return [info.cls() for info in self.plugins.get("reporter", {}).values()
                if getattr(info.cls, "scope", "run") == scope]

    def rows(self) -> list[PluginInfo]:
        return [info for kind in PLUGIN_KINDS for info in self.plugins.get(kind, {}).values()]

    def distribution_of(self, plugin: Any) -> tuple[str, str]:
        """(distribution, version) of a registered plugin object; plugins passed in code have none."""
        return self.distributions.get(plugin, ("(registered in code)", ""))

    def hook_plugins(self) -> list[dict[str, str]]:
        """Registered modules that implement lifecycle or report hooks (beyond registering classes):
        name, distribution, version and the hooks, so plugins that only observe or add to a run
        are visible in megafc-plugins and provenance.json too."""
        registration = {hook for hook, _ in PLUGIN_KINDS.values()}
        out = []
        for name, plugin in self.manager.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(h.name for h in (self.manager.get_hookcallers(plugin) or []) if h.name not in registration)
            if hooks:
                dist, version = self.distribution_of(plugin)
                module = getattr(plugin, "__name__", type(plugin).__name__)
                out.append({"name": str(name), "module": module, "distribution": dist, "version": version,
                            "hooks": ", ".join(hooks)})
        return out


#: (variable, unknown names) already warned about in this process.
_WARNED: set[tuple[str, tuple[str, ...]]] = set()


def load_entry_points(pm: pluggy.PluginManager) -> tuple[dict[Any, tuple[str, str]], list[dict[str, str]]]:
    """Register every ``megafc`` entry point on its own, so that one package that fails to
    import (or whose hooks do not match the specs) costs only its own plugins: it is logged,
    listed by ``megafc-plugins`` and named when one of its plugins is asked for. When
    ``$MEGAFC_LOAD_PLUGINS`` is set, only the entry points or distributions it names are loaded;
    those named in ``$MEGAFC_DISABLE_PLUGINS`` are not."""
    from importlib.metadata import entry_points

    allowed = _names(LOAD_ENV)
    disabled = _names(DISABLE_ENV) or set()
    distinfo: dict[Any, tuple[str, str]] = {}
    broken: list[dict[str, str]] = []
    found = entry_points(group=hookspecs.PROJECT_NAME)
    installed = {ep.name for ep in found} | {ep.dist.name for ep in found if ep.dist is not None}
    for env, names in ((LOAD_ENV, allowed), (DISABLE_ENV, disabled)):
        unknown = sorted((names or set()) - installed)
        if unknown and (env, tuple(unknown)) not in _WARNED:  # once a process, not at every registry built
            _WARNED.add((env, tuple(unknown)))  # a typo here would silently load other plugins than meant
            log.warning("%s names %s, which is no installed megafc entry point or distribution (installed: %s)",
                        env, ", ".join(unknown), ", ".join(sorted(installed)))
    for ep in found:
        dist = (ep.dist.name, ep.dist.version) if ep.dist is not None else ("?", "")
        if ep.name in disabled or dist[0] in disabled:
            log.info("plugin entry point '%s' (%s) not loaded: listed in %s", ep.name, dist[0], DISABLE_ENV)
            continue
        if allowed is not None and ep.name not in allowed and dist[0] not in allowed:
            log.info("plugin entry point '%s' (%s) not loaded: not listed in %s", ep.name, dist[0], LOAD_ENV)
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken third-party package must not stop every run
            # the whole message: pluggy's validation error says on its later lines which argument is wrong
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            broken.append({"entry_point": ep.name, "distribution": dist[0], "error": error})
            log.warning("plugin entry point '%s' of %s could not be loaded (%s); its plugins are unavailable "
                        "(%s=%s skips it quietly; the other entry points of %s still load)", ep.name, dist[0], error,
                        DISABLE_ENV, ep.name, dist[0])
            continue
        distinfo[plugin] = dist
    return distinfo, broken


def build_registry(extra_plugins: list[Any] | None = None, entry_points: bool = True) -> Registry:
    """Load plugins from the ``megafc`` entry-point group (plus ``extra_plugins``)."""
    import os
    import sys

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    distinfo, broken = load_entry_points(pm) if entry_points else ({}, [])
    for plugin in extra_plugins or []:
        pm.register(plugin)
    tracing = any(os.environ.get(v, "") not in ("", "0") for v in (TRACE_ENV, TRACE_ENV_OLD))
    if tracing:
        pm.trace.root.setwriter(lambda line: sys.stderr.write(f"megafc hook: {line}"))
        pm.enable_tracing()
    registry = Registry(manager=pm, plugins={kind: {} for kind in PLUGIN_KINDS}, broken=broken,
                        distributions=distinfo)
    for kind, (hook_name, base) in PLUGIN_KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            dist, version = registry.distribution_of(impl.plugin)
            classes = impl.function() or []
            if tracing:  # called one by one (to know who gave which class), so traced here
                sys.stderr.write(f"megafc hook: {hook_name} [{impl.plugin_name}] -> {[c.name for c in classes]}\n")
            for cls in classes:
                _check_plugin_class(cls, base, kind, impl.plugin_name)
                if cls.name in registry.plugins[kind]:
                    other = registry.plugins[kind][cls.name]
                    if other.cls is cls:
                        continue
                    raise PluginError(
                        f"{kind} plugin name '{cls.name}' is registered twice: by "
                        f"{other.location} ({other.distribution}) and by "
                        f"{cls.__module__}:{cls.__qualname__} ({dist}); rename one"
                    )
                registry.plugins[kind][cls.name] = PluginInfo(kind, cls.name, cls, dist, version)
    return registry


def _check_plugin_class(cls: Any, base: type[Plugin], kind: str, source: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(
            f"plugin '{source}': hook for kind '{kind}' returned {cls!r}, "
            f"expected a subclass of megafc.core.{base.__name__}"
        )
    if not cls.name or not isinstance(cls.name, str) or not cls.name.isidentifier():
        raise PluginError(
            f"plugin '{source}': {cls.__qualname__}.name must be a non-empty identifier-like "
            f"string (its config name), got {cls.name!r}"
        )
    if not dataclasses.is_dataclass(cls.Config):
        raise PluginError(f"plugin '{source}': {cls.__qualname__}.Config must be a dataclass")
    if "name" in {f.name for f in dataclasses.fields(cls.Config)}:
        raise PluginError(
            f"plugin '{source}': {cls.__qualname__}.Config may not have a field called 'name' "
            "(it is the plugin selector)"
        )
    for key, enum in choice_fields(cls.Config):  # OmegaConf reads a choice by its name, Python by its value
        odd = [f"{m.name} = {m.value!r}" for m in enum if m.name != m.value]
        if odd:
            raise PluginError(f"plugin '{source}': {cls.__qualname__}.Config.{key} is a {enum.__name__} whose "
                              f"member(s) {odd} are not named as their value; a Choice's members must be "
                              "(the command line reads the name, Python the value)")


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of installed plugins, built once per process."""
    return build_registry()
