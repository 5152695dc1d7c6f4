"""Plugin discovery, in this order (a later source replaces an earlier plugin of the same
name, so a deployment can replace a built-in):

1. the built-in TuShare plugins (``plugins_bridge.tushare.datasets``; off with
   ``STOCKQ_BUILTIN_PLUGINS=false``);
2. the plugins of an installed ``stock_datasource`` package, through its plugin manager
   (``plugins_bridge.adapters.stock_datasource``);
3. the ``stockq.plugins`` entry point group;
4. ``STOCKQ_PLUGINS``: a comma-separated list of ``module:attr``, where attr is a plugin
   instance, a plugin class, or a list of them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from app.errors import ConfigError, DependencyCycle, InvalidInput, UnknownPlugin
from app.settings import Settings
from plugins_bridge.contract import PluginLike

ENTRY_POINT_GROUP = "stockq.plugins"


def _instances(obj: Any, origin: str) -> list[PluginLike]:
    if isinstance(obj, list | tuple):
        out: list[PluginLike] = []
        for item in obj:
            out += _instances(item, origin)
        return out
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise ConfigError(f"plugin class from {origin} cannot be created: {exc}") from None
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name or not callable(getattr(obj, "run", None)):
        raise ConfigError(f"{origin} is not a plugin: it needs a non-empty `name` and `run()`")
    return [obj]


def load_spec(spec: str) -> list[PluginLike]:
    """Import ``module:attr`` and return the plugins it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"STOCKQ_PLUGINS entry {spec!r} must look like module:attr")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"STOCKQ_PLUGINS entry {spec!r}: cannot import {module_name}: {exc}") \
            from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"STOCKQ_PLUGINS entry {spec!r}: {module_name} has no {attr!r}") \
            from None
    return _instances(obj, spec)


def builtin_plugins() -> list[PluginLike]:
    """The TuShare plugins that ship with stockq."""
    from plugins_bridge.tushare.datasets import BUILTINS

    return [make() for make in BUILTINS]


def adapted_plugins() -> tuple[list[PluginLike], list[dict[str, str]]]:
    """The plugins of an installed ``stock_datasource`` package ([] without one), and
    what of it could not be loaded (``{"source", "name", "reason"}``)."""
    from plugins_bridge.adapters.stock_datasource import discover, unavailable

    found: list[PluginLike] = list(discover())
    return found, [u.to_dict() for u in unavailable()]


class PluginRegistry:
    def __init__(self, plugins: Iterable[PluginLike] = (),
                 unavailable: Iterable[dict[str, str]] = ()) -> None:
        self._plugins: dict[str, PluginLike] = {}
        for p in plugins:
            self._plugins[p.name] = p
        # plugins (or their modules) a source found but could not load, with the reason
        self.unavailable: list[dict[str, str]] = list(unavailable)

    @classmethod
    def from_settings(cls, settings: Settings) -> PluginRegistry:
        return cls.load(settings.plugins, builtins=settings.builtin_plugins)

    @classmethod
    def load(cls, specs: Iterable[str] = (), *, use_entry_points: bool = True,
             builtins: bool = False) -> PluginRegistry:
        """Plugins from every source (built-ins and the adapter only with ``builtins``,
        which :meth:`from_settings` sets from ``STOCKQ_BUILTIN_PLUGINS``)."""
        found: list[PluginLike] = []
        missing: list[dict[str, str]] = []
        if builtins:
            found += builtin_plugins()
            adapted, missing = adapted_plugins()
            found += adapted
        if use_entry_points:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    found += _instances(ep.load(), f"entry point {ep.name}")
                except ConfigError:
                    raise
                except Exception as exc:
                    raise ConfigError(f"entry point {ep.name} ({ep.value}) failed: {exc}") \
                        from None
        for spec in specs:
            found += load_spec(spec)
        return cls(found, missing)

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def get(self, name: str) -> PluginLike:
        try:
            return self._plugins[name]
        except KeyError:
            raise UnknownPlugin(name, self.names()) from None

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def groups(self) -> dict[str, list[str]]:
        """Plugin groups (a plugin lists its groups in ``groups``), sorted."""
        out: dict[str, list[str]] = {}
        for name in self.names():
            for group in getattr(self._plugins[name], "groups", ()) or ():
                out.setdefault(str(group), []).append(name)
        return out

    def group(self, name: str) -> list[str]:
        groups = self.groups()
        if name not in groups:
            known = ", ".join(sorted(groups)) or "none are declared"
            raise InvalidInput(f"unknown plugin group {name!r}; known groups: {known}")
        return groups[name]

    def resolve(self, names: Iterable[str], *, include_optional: bool = False) -> list[str]:
        """``names`` plus their dependencies (required ones always, optional ones on
        request), in dependency order: every plugin after the plugins it needs,
        including optional dependencies that are in the batch anyway (their tasks wait
        on them).  Unknown names raise UnknownPlugin; cycles raise DependencyCycle."""

        def needs(name: str, optional: Iterable[str]) -> list[str]:
            plugin = self.get(name)
            return [*(getattr(plugin, "dependencies", ()) or ()),
                    *(d for d in getattr(plugin, "optional_dependencies", ()) or ()
                      if d in optional)]

        every = self._plugins if include_optional else ()
        chosen = self._topological(names, lambda n: needs(n, every))
        if include_optional:
            return chosen
        members = set(chosen)
        return self._topological(chosen, lambda n: needs(n, members))

    def _topological(self, names: Iterable[str], deps_of: Callable[[str], list[str]]
                     ) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}  # 1 on the current path, 2 placed

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise DependencyCycle(path[path.index(name):] + [name])
            self.get(name)
            state[name] = 1
            for dep in deps_of(name):
                visit(dep, [*path, name])
            state[name] = 2
            order.append(name)

        for name in names:
            visit(name, [])
        return order

    def describe(self, name: str) -> dict[str, Any]:
        p = self.get(name)
        return {
            "name": p.name,
            "description": getattr(p, "description", ""),
            "default_timeout_seconds": getattr(p, "default_timeout_seconds", None),
            "default_max_attempts": getattr(p, "default_max_attempts", None),
            "rate_limit_per_minute": getattr(p, "rate_limit_per_minute", None),
            "dependencies": list(getattr(p, "dependencies", ())),
            "optional_dependencies": list(getattr(p, "optional_dependencies", ())),
            "schedule": getattr(p, "schedule", None),
            "groups": list(getattr(p, "groups", ()) or ()),
        }
