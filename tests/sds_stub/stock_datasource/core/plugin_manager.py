"""Stand-in for ``stock_datasource.core.plugin_manager``: the global ``plugin_manager``
finds plugin classes in the packages under ``stock_datasource.plugins``."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from stock_datasource.core.base_plugin import BasePlugin


class PluginManager:
    def __init__(self) -> None:
        self.plugins: dict[str, BasePlugin] = {}

    def discover_plugins(self, package_path: str = "stock_datasource.plugins") -> None:
        package = importlib.import_module(package_path)
        folder = Path(str(package.__file__)).parent
        for _, name, _ in pkgutil.iter_modules([str(folder)]):
            if name.startswith("_"):
                continue
            module = importlib.import_module(f"{package_path}.{name}")
            for attr in vars(module).values():
                if isinstance(attr, type) and issubclass(attr, BasePlugin) \
                        and attr is not BasePlugin:
                    self.register_plugin(attr())

    def register_plugin(self, plugin: BasePlugin) -> None:
        self.plugins[plugin.name] = plugin

    def get_plugin(self, name: str) -> BasePlugin | None:
        return self.plugins.get(name)

    def list_plugins(self) -> list[str]:
        return list(self.plugins)


plugin_manager = PluginManager()
