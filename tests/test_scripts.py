"""Each transition script carries only the shared definitions it uses."""

from __future__ import annotations

import re

import pytest

from app.keys import lua_prelude
from app.scripts import TRANSITIONS, _definitions, _read, script_source

_STRINGS_AND_COMMENTS = re.compile(r"--[^\n]*|'[^'\n]*'|\"[^\"\n]*\"")


def _names(source: str) -> set[str]:
    """Names defined at the top level of ``source``."""
    return {n for names, _ in _definitions(source) for n in names}


SHARED = _names(lua_prelude() + "\n" + _read("lib"))


@pytest.mark.parametrize("name", TRANSITIONS)
def test_every_shared_name_a_script_uses_is_defined_in_it(name: str) -> None:
    source = script_source(name)
    code = _STRINGS_AND_COMMENTS.sub(" ", source)
    used = set(re.findall(r"(?<![.:\w])([A-Za-z_]\w*)", code)) & SHARED
    missing = used - _names(source)
    assert not missing, f"{name}.lua uses {sorted(missing)} without their definitions"


def test_unused_definitions_are_left_out() -> None:
    enqueue = script_source("enqueue")
    assert "local function finish(" not in enqueue
    assert "local function audit_task(" not in enqueue
    assert "local function k_task(" in enqueue and "local function reject(" in enqueue
    # reached only through other helpers: claim -> claim_next -> promote_due -> push_ready
    claim = script_source("claim")
    for helper in ("claim_next", "promote_due", "push_ready", "move_status", "DOORBELL_MAX"):
        assert re.search(rf"^local (?:function )?{helper}\b", claim, re.M), helper
    assert len(enqueue) < len(lua_prelude()) + len(_read("lib"))
