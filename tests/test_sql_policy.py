"""The statement policy on its own: what an unknown node, key or function gets, the
aggregate combinators, and the canonical forms of DESCRIBE/EXISTS/SHOW CREATE.  The
trees are ClickHouse's own JSON shapes; the end-to-end attacks against the engine are
in tests/test_query_sandbox.py."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import ReadOnlyViolation
from app.sql_policy import Catalogue, Policy, check, check_canonical

ROWS = [  # name, case_insensitive, alias_to, categories, is_aggregate, origin
    ("sum", 0, "", "Aggregate Functions", 1, "System"),
    ("uniq", 0, "", "Aggregate Functions", 1, "System"),
    ("plus", 0, "", "Arithmetic", 0, "System"),
    ("in", 0, "", "Comparison", 0, "System"),
    ("tuple", 0, "", "Tuple", 0, "System"),
    ("lower", 1, "", "String", 0, "System"),
    ("lcase", 1, "lower", "", 0, "System"),
    ("file", 0, "", "Other", 0, "System"),
    ("version", 0, "", "Other", 0, "System"),
    ("dictGet", 0, "", "Dictionary", 0, "System"),
    ("myUdf", 0, "", "String", 0, "SQLUserDefined"),
]
POLICY = Policy("default", Catalogue.from_rows(ROWS, ["If", "OrNull", "State", "Merge"]))


def select(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    query = {"type": "SelectQuery", "select": {"type": "ExpressionList", "children": list(items)},
             **extra}
    return {"type": "SelectWithUnionQuery", "union_mode": "UNION_DEFAULT",
            "list_of_selects": {"type": "ExpressionList", "children": [query]},
            "is_outfile_append": False, "is_outfile_truncate": False,
            "is_into_outfile_with_stdout": False}


def call(name: str, *args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Function", "name": name,
            "arguments": {"type": "ExpressionList", "children": list(args)}}


ONE = {"type": "Literal", "value": {"field_type": "UInt64", "value": 1}}


def test_functions_come_from_computing_categories_only() -> None:
    for name in ("sum", "plus", "lower", "LOWER", "lcase", "version", "sumIf", "uniqStateMerge",
                 "sumOrNullIf", "lambda"):
        check(select(call(name, ONE)), POLICY)
    for name in ("file", "dictGet", "myUdf", "nope", "If", "sumNope", "plusIf"):
        with pytest.raises(ReadOnlyViolation, match=f"function '{name}'"):
            check(select(call(name, ONE)), POLICY)


def test_unknown_nodes_and_keys_are_refused() -> None:
    with pytest.raises(ReadOnlyViolation, match="a create query"):
        check(select({"type": "CreateQuery"}), POLICY)
    with pytest.raises(ReadOnlyViolation, match="'into_somewhere'"):
        check(select(ONE, into_somewhere={"type": "Literal", "value": 1}), POLICY)
    tree = select(ONE)
    tree["out_file"] = {"type": "Literal", "value": {"field_type": "String", "value": "/x"}}
    with pytest.raises(ReadOnlyViolation, match="INTO OUTFILE"):
        check(tree, POLICY)
    tree = select(ONE)
    tree["is_outfile_append"] = True
    with pytest.raises(ReadOnlyViolation, match="INTO OUTFILE"):
        check(tree, POLICY)
    with pytest.raises(ReadOnlyViolation, match="only SELECT"):
        check({"type": "InsertQuery"}, POLICY)
    with pytest.raises(ReadOnlyViolation, match="query parameters"):
        check(select({"type": "QueryParameter", "name": "x", "param_type": "String"}), POLICY)


def test_the_right_side_of_in_is_a_list_a_subquery_or_a_warehouse_table() -> None:
    a = {"type": "Identifier", "name": "a"}
    check(select(call("in", a, call("tuple", ONE))), POLICY)
    check(select(call("in", a, {"type": "Identifier", "name": "codes"})), POLICY)
    with pytest.raises(ReadOnlyViolation, match="'system.users'"):
        check(select(call("in", a, {"type": "Identifier", "name": "system.users",
                                    "name_parts": ["system", "users"]})), POLICY)
    with pytest.raises(ReadOnlyViolation, match="right side of IN"):
        check(select(call("in", a, call("plus", ONE))), POLICY)


def test_the_canonical_named_forms() -> None:
    for text in ("DESCRIBE TABLE ods_daily", "EXISTS TABLE default.ods_daily",
                 "SHOW CREATE TABLE `ods daily`", "DESCRIBE TABLE system.columns",
                 "DESCRIBE TABLE `default`.`we\\`ird`"):
        check_canonical(text, POLICY)
    for text in ("DESCRIBE TABLE file('/etc/passwd')", "DESCRIBE TABLE t SETTINGS a = 1",
                 "DESCRIBE TABLE t FORMAT JSON", "DESCRIBE TABLE (SELECT 1)",
                 "SHOW CREATE DATABASE default", "DROP TABLE t",
                 "DESCRIBE TABLE t INTO OUTFILE 'x'", "EXISTS TABLE `a`.`b`.`c`"):
        with pytest.raises(ReadOnlyViolation, match="only SELECT"):
            check_canonical(text, POLICY)
    with pytest.raises(ReadOnlyViolation, match="'system.users'"):
        check_canonical("SHOW CREATE TABLE system.users", POLICY)
    with pytest.raises(ReadOnlyViolation, match="'other.t'"):
        check_canonical("EXISTS TABLE `other`.t", POLICY)
