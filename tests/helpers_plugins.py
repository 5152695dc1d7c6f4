"""Objects for the plugin registry tests (named in ``module:attr`` specs)."""

from __future__ import annotations

from typing import Any

from plugins_bridge.contract import Plugin, success


class Louder(Plugin):
    """A plugin given as a class: the registry instantiates it."""

    name = "louder"
    default_timeout_seconds = 120

    def run(self, **params: Any) -> dict[str, Any]:
        return success(1)


class ReplacementNoop(Plugin):
    """Same name as the example ``noop``: a later source replaces it."""

    name = "noop"
    description = "replacement"

    def run(self, **params: Any) -> dict[str, Any]:
        return success(0)


class Duck:
    """Not a Plugin subclass, but has the contract (name + run)."""

    name = "duck"

    def run(self, **params: Any) -> dict[str, Any]:
        return success(0)


class Nameless(Plugin):
    def run(self, **params: Any) -> dict[str, Any]:
        return success(0)


class NotRunnable:
    name = "not_runnable"
    run = "nope"


class Exploding(Plugin):
    name = "exploding"

    def __init__(self) -> None:
        raise RuntimeError("needs a token")


LOUDER = Louder
REPLACEMENT = ReplacementNoop()
DUCKS = (Duck(), [Louder()])  # nested lists/tuples are flattened
NOT_A_PLUGIN = object()
NUMBER = 42
NAMELESS = Nameless()
NOT_RUNNABLE = NotRunnable()
EXPLODING = Exploding
MIXED = [Duck(), object()]  # one bad item spoils the entry
