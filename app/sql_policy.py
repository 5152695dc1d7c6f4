"""What ``POST /api/v1/query`` may run, decided on ClickHouse's own parse.

The sandbox (:mod:`app.query_sandbox`) asks the engine that will run a statement to
parse it (``parseQueryToJSON``) and hands the JSON tree to :func:`check`.  Nothing is
decided on the text: every node of the tree must be of a known type, every key of a
node must be known for that type, and each is either harmless or checked:

* statements: ``SELECT``/``WITH`` (with ``UNION``/``INTERSECT``/``EXCEPT``),
  ``SHOW TABLES``/``SHOW DATABASES``/``SHOW COLUMNS``, ``EXPLAIN`` of those; plus
  ``DESCRIBE TABLE``, ``EXISTS TABLE`` and ``SHOW CREATE TABLE`` of one named table,
  which ClickHouse cannot serialise as JSON and which are matched exactly on its own
  canonical formatting (:func:`check_canonical`);
* tables: those of the warehouse's own database, and a few ``system`` tables needed
  for discovery (:data:`SYSTEM_TABLES`); never a table function (``file``, ``url``,
  ``s3``, ``mysql``, ``remote``, ...), in ``FROM``, ``JOIN`` or on the right of ``IN``;
* functions: those of the engine's own catalogue in categories that only compute
  (:data:`CATEGORIES`: arithmetic, strings, dates, arrays, aggregates, ...) and a short
  list of harmless ones from its "Other" bag (:data:`OTHER_FUNCTIONS`).  The rest —
  ``file()``, ``dictGet*``, ``joinGet``, ``getSetting``, ``sleep``, the AI and
  introspection functions, user-defined functions — is refused;
* no ``INTO OUTFILE``, no ``FORMAT``, no ``SETTINGS`` clause, no query parameters.

This is one of two locks: the session that runs the statement is also ClickHouse's own
``readonly=1`` with its limits set before it was locked (see :mod:`app.query_sandbox`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.errors import ReadOnlyViolation

STATEMENTS = ("only SELECT, WITH, SHOW TABLES, SHOW DATABASES, SHOW COLUMNS, DESCRIBE "
              "TABLE, EXISTS TABLE, SHOW CREATE TABLE and EXPLAIN statements are allowed")

SYSTEM_TABLES = frozenset({"one", "databases", "tables", "columns", "parts"})

CATEGORIES = frozenset({
    "Aggregate Functions", "Arithmetic", "Arrays", "Bit", "Bitmap", "Comparison",
    "Conditional", "Dates and Times", "Distance", "Encoding", "Encryption", "Financial",
    "Geo", "Geo Polygon", "Hash", "IP Address", "JSON", "Logical", "Map", "Mathematical",
    "Null", "NumericIndexedVector", "QBit", "Random Number", "Rounding", "String",
    "String Replacement", "String Search", "String Splitting", "Time Series",
    "Time Window", "Tuple", "Type Conversion", "URL", "UUID",
})

# from the "Other" category: pure functions of their arguments or of the block
OTHER_FUNCTIONS = frozenset({
    "MACNumToString", "MACStringToNum", "MACStringToOUI", "bar", "blockNumber",
    "blockSize", "byteSize", "colorOKLABToSRGB", "colorOKLCHToSRGB", "colorSRGBToOKLAB",
    "colorSRGBToOKLCH", "countDigits", "currentDatabase", "defaultValueOfArgumentType",
    "defaultValueOfTypeName", "dumpColumnStructure", "finalizeAggregation",
    "flipCoordinates", "formatReadableDecimalSize", "formatReadableQuantity",
    "formatReadableSize", "formatReadableTimeDelta", "getSizeOfEnumType", "getSubcolumn",
    "identity", "ignore", "indexHint", "initializeAggregation", "isConstant",
    "isDecimalOverflow", "lowCardinalityIndices", "lowCardinalityKeys", "materialize",
    "minSampleSizeContinuous", "minSampleSizeConversion", "neighbor",
    "parseISO8601Duration", "parseReadableSize", "parseReadableSizeOrNull",
    "parseReadableSizeOrZero", "parseTimeDelta", "rowNumberInAllBlocks",
    "rowNumberInBlock", "runningAccumulate", "runningDifference",
    "runningDifferenceStartingWithFirstValue", "throwIf", "toColumnTypeName",
    "toTypeName", "transform", "variantElement", "variantType", "version", "visibleWidth",
})

# what the parser writes for syntax that has no entry of its own in system.functions
SYNTAX_FUNCTIONS = frozenset({"lambda", "exists", "untuple", "grouping"})

IN_FUNCTIONS = frozenset({"in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn",
                          "globalNullIn", "globalNotNullIn"})

EXPLAIN_KINDS = frozenset({"EXPLAIN", "EXPLAIN AST", "EXPLAIN SYNTAX", "EXPLAIN QUERY TREE",
                           "EXPLAIN PIPELINE", "EXPLAIN ESTIMATE"})
EXPLAIN_OPTIONS = frozenset({"header", "description", "indexes", "actions", "json",
                             "sorting", "distributed", "keep_logical_steps", "compact",
                             "graph", "oneline", "run_passes", "dump_passes", "passes",
                             "dump_tree", "dump_ast", "projections"})

# keys every statement node carries; they must be false
_OUTPUT_FLAGS = ("is_outfile_append", "is_outfile_truncate", "is_into_outfile_with_stdout")

# keys refused with a message of their own, wherever they appear
_REFUSED = {
    "out_file": "INTO OUTFILE is not allowed",
    "compression": "INTO OUTFILE is not allowed",
    "compression_level": "INTO OUTFILE is not allowed",
    "format_ast": "a FORMAT clause is not allowed (the answer is JSON)",
    "format": "a FORMAT clause is not allowed (the answer is JSON)",
    "settings": "a SETTINGS clause is not allowed: the limits are fixed by the server",
    "settings_ast": "a SETTINGS clause is not allowed: the limits are fixed by the server",
    "table_function": "table functions (file, url, s3, mysql, remote, numbers, ...) are "
                      "not allowed: read the warehouse's tables",
    "table_override": "EXPLAIN TABLE OVERRIDE is not allowed",
    "clusters": "SHOW CLUSTERS is not allowed",
    "merges": "SHOW MERGES is not allowed",
    "caches": "SHOW CACHES is not allowed",
    "m_settings": "SHOW SETTINGS is not allowed",
    "changed": "SHOW SETTINGS is not allowed",
}
_REFUSED_FLAGS = {"settings": "SHOW SETTINGS is not allowed"}  # a bool on SHOW nodes


@dataclass(frozen=True, slots=True)
class Shape:
    """The keys a node type may carry: children (nodes or lists of nodes), and plain
    values (names, flags, literal data)."""

    children: frozenset[str]
    values: frozenset[str] = frozenset()


def _shape(children: str = "", values: str = "") -> Shape:
    return Shape(frozenset(children.split()), frozenset(values.split()))


_QUERY_OUTPUT = " ".join(_OUTPUT_FLAGS)
SHAPES: dict[str, Shape] = {
    "SelectWithUnionQuery": _shape("list_of_selects",
                                   f"union_mode list_of_modes alias {_QUERY_OUTPUT}"),
    "SelectIntersectExceptQuery": _shape("children", "final_operator"),
    "SelectQuery": _shape(
        "with select tables prewhere where group_by having window qualify order_by "
        "limit_by_length limit_by_offset limit_by limit_offset limit_length interpolate",
        "distinct group_by_all group_by_with_grouping_sets group_by_with_rollup "
        "group_by_with_cube group_by_with_totals group_by_with_constant_keys "
        "order_by_all limit_with_ties"),
    "ExpressionList": _shape("children"),
    "TablesInSelectQuery": _shape("children"),
    "TablesInSelectQueryElement": _shape("table_expression table_join array_join"),
    "TableExpression": _shape("database_and_table_name subquery sample_size sample_offset",
                              "final"),
    "TableIdentifier": _shape("", "name name_parts alias"),
    "TableJoin": _shape("on_expression using_expression_list", "kind strictness locality"),
    "ArrayJoin": _shape("expression_list", "kind"),
    "Subquery": _shape("children", "alias cte_name"),
    "WithElement": _shape("subquery", "name aliases"),
    "Identifier": _shape("", "name name_parts alias"),
    "Literal": _shape("", "value alias"),
    "Function": _shape("arguments parameters window_definition",
                       "name alias is_operator is_lambda_function is_window_function kind "
                       "window_name nulls_action"),
    "Asterisk": _shape("transformers"),
    "QualifiedAsterisk": _shape("qualifier transformers"),
    "ColumnsRegexpMatcher": _shape("transformers", "pattern"),
    "ColumnsListMatcher": _shape("column_list transformers"),
    "QualifiedColumnsRegexpMatcher": _shape("qualifier transformers", "pattern"),
    "QualifiedColumnsListMatcher": _shape("qualifier column_list transformers"),
    "ColumnsTransformerList": _shape("children"),
    "ColumnsApplyTransformer": _shape("lambda parameters",
                                      "func_name lambda_arg column_name_prefix"),
    "ColumnsExceptTransformer": _shape("children", "is_strict pattern"),
    "ColumnsReplaceTransformer": _shape("children", "is_strict"),
    "ColumnsReplaceTransformerReplacement": _shape("children", "name"),
    "OrderByElement": _shape("expression fill_from fill_to fill_step fill_staleness "
                             "collation",
                             "direction nulls_direction nulls_direction_was_explicitly_"
                             "specified with_fill"),
    "InterpolateElement": _shape("expr", "column"),
    "SampleRatio": _shape("", "numerator denominator"),
    "WindowDefinition": _shape("partition_by order_by frame_begin_offset frame_end_offset",
                               "frame_type frame_begin_type frame_begin_preceding "
                               "frame_end_type frame_end_preceding frame_is_default "
                               "parent_window_name"),
    "WindowListElement": _shape("definition", "name"),
    "ShowTablesQuery": _shape("from where_expression limit_length",
                              "databases dictionaries temporary full like not_like "
                              f"case_insensitive_like {_QUERY_OUTPUT}"),
    "ShowColumnsQuery": _shape("where_expression limit_length",
                               "database table extended full like not_like "
                               f"case_insensitive_like {_QUERY_OUTPUT}"),
    "ExplainQuery": _shape("query", f"kind {_QUERY_OUTPUT}"),
}
# "SHOW COLUMNS" nodes name their table in plain values; the walk checks them itself
_STATEMENT_TYPES = frozenset({"SelectWithUnionQuery", "ShowTablesQuery", "ShowColumnsQuery",
                              "ExplainQuery"})


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The engine's functions this path lets through (names as the engine spells
    them, and lower-cased for its case-insensitive ones)."""

    names: frozenset[str]
    names_ci: frozenset[str]
    aggregates: frozenset[str]
    combinators: tuple[str, ...]  # longest first

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[Any, ...]], combinators: Iterable[str]
                  ) -> Catalogue:
        """``rows``: (name, case_insensitive, alias_to, categories, is_aggregate, origin)
        of ``system.functions``; ``combinators``: ``system.aggregate_function_combinators``."""
        table = {str(r[0]): r for r in rows}

        def allowed(name: str, depth: int = 0) -> bool:
            row = table.get(name)
            if row is None or depth > 4 or str(row[5]) != "System":
                return False
            if row[2]:  # an alias: its target decides
                return allowed(str(row[2]), depth + 1)
            cats = {c.strip() for c in str(row[3]).split(",") if c.strip()}
            return (bool(cats) and cats <= CATEGORIES) or name in OTHER_FUNCTIONS

        names = {n for n in table if allowed(n)}
        aggregates = {n for n in names if _target(table, n)[4]}
        return cls(
            frozenset(names),
            frozenset(n.lower() for n in names if table[n][1]),
            frozenset(aggregates),
            tuple(sorted({str(c) for c in combinators}, key=len, reverse=True)),
        )

    def permits(self, name: str) -> bool:
        if name in self.names or name.lower() in self.names_ci or name in SYNTAX_FUNCTIONS:
            return True
        return self._aggregate(name, 0)

    def _aggregate(self, name: str, depth: int) -> bool:
        """``sumIf``, ``uniqStateMerge``, ``quantilesOrNullIf``: an allowed aggregate
        function with combinator suffixes."""
        if name in self.aggregates:
            return True
        if depth > 6:
            return False
        for suffix in self.combinators:
            if len(name) > len(suffix) and name.endswith(suffix) and \
                    self._aggregate(name[: -len(suffix)], depth + 1):
                return True
        return False


def _target(table: Mapping[str, tuple[Any, ...]], name: str) -> tuple[Any, ...]:
    row = table[name]
    for _ in range(5):
        if not row[2] or str(row[2]) not in table:
            break
        row = table[str(row[2])]
    return row


@dataclass(frozen=True, slots=True)
class Policy:
    database: str  # the warehouse's own database (the session's current one)
    catalogue: Catalogue

    def table(self, parts: list[str]) -> None:
        """Refuse a table outside the warehouse's database and the discovery tables."""
        if len(parts) == 1 or (len(parts) == 2 and parts[0] == self.database):
            return
        if len(parts) == 2 and parts[0] == "system" and parts[1] in SYSTEM_TABLES:
            return
        shown = ".".join(parts)
        allowed = ", ".join(f"system.{t}" for t in sorted(SYSTEM_TABLES))
        raise ReadOnlyViolation(f"table {shown!r} is not readable here: only the tables of "
                                f"database {self.database!r} and {allowed}")

    def database_name(self, name: str) -> None:
        if name not in (self.database, "system"):
            raise ReadOnlyViolation(f"database {name!r} is not readable here: only "
                                    f"{self.database!r} and system")


def check(tree: Any, policy: Policy) -> None:
    """Raise ReadOnlyViolation unless every node of ``tree`` (``parseQueryToJSON``'s
    answer, decoded) is allowed."""
    if not isinstance(tree, dict) or tree.get("type") not in _STATEMENT_TYPES:
        raise ReadOnlyViolation(STATEMENTS)
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            raise ReadOnlyViolation("the statement's parse has an unexpected shape")
        stack.extend(_children(node, policy))


def _children(node: dict[str, Any], policy: Policy) -> list[Any]:
    kind = str(node.get("type"))
    shape = SHAPES.get(kind)
    if shape is None:
        if kind == "QueryParameter":
            raise ReadOnlyViolation("query parameters ({name:Type}) are not supported")
        if kind == "SetQuery":
            raise ReadOnlyViolation(_REFUSED["settings"])
        raise ReadOnlyViolation(f"{_words(kind)} is not allowed here ({STATEMENTS})")
    children: list[Any] = []
    for key, value in node.items():
        if key == "type":
            continue
        if key in shape.children:
            children.append(value)
        elif key in shape.values:
            if key in _OUTPUT_FLAGS and value:
                raise ReadOnlyViolation(_REFUSED["out_file"])
        elif kind == "ExplainQuery" and key == "settings":
            _explain_options(value)
        elif key in _REFUSED_FLAGS and value is True:
            raise ReadOnlyViolation(_REFUSED_FLAGS[key])
        elif key in _REFUSED:
            raise ReadOnlyViolation(_REFUSED[key])
        else:
            raise ReadOnlyViolation(f"{_words(kind)} with {key!r} is not allowed here")
    _check_node(kind, node, policy)
    return children


def _check_node(kind: str, node: dict[str, Any], policy: Policy) -> None:
    if kind == "TableIdentifier":
        policy.table(_parts(node))
    elif kind == "Function":
        _function(node, policy)
    elif kind == "ColumnsApplyTransformer" and node.get("func_name"):
        _function_name(str(node["func_name"]), policy)
    elif kind == "ShowTablesQuery":
        source = node.get("from")
        if isinstance(source, dict):
            policy.database_name(".".join(_parts(source)))
    elif kind == "ShowColumnsQuery":
        parts = [str(node.get("table", ""))]
        policy.table([str(node["database"]), *parts] if node.get("database") else parts)
    elif kind == "ExplainQuery" and node.get("kind") not in EXPLAIN_KINDS:
        raise ReadOnlyViolation(f"{node.get('kind')} is not allowed (EXPLAIN, AST, SYNTAX, "
                                "QUERY TREE, PIPELINE and ESTIMATE are)")


def _function(node: dict[str, Any], policy: Policy) -> None:
    name = str(node.get("name", ""))
    _function_name(name, policy)
    if name in IN_FUNCTIONS:
        args = (node.get("arguments") or {}).get("children") or []
        if len(args) == 2:
            _in_source(args[1], policy)


def _function_name(name: str, policy: Policy) -> None:
    if not policy.catalogue.permits(name):
        raise ReadOnlyViolation(f"function {name!r} is not allowed here (it reads files, "
                                "settings, dictionaries or the network, or it is unknown)")


def _in_source(arg: Any, policy: Policy) -> None:
    """The right side of IN: a list, a subquery or a table of the warehouse; never a
    table function."""
    kind = arg.get("type") if isinstance(arg, dict) else None
    if kind == "Identifier":
        policy.table(_parts(arg))
    elif kind == "Function" and arg.get("name") not in ("tuple", "array"):
        raise ReadOnlyViolation("the right side of IN must be a list, a subquery or a "
                                "table of the warehouse")


def _explain_options(value: Any) -> None:
    changes = value.get("changes") if isinstance(value, dict) else None
    for change in changes or []:
        name = change.get("name") if isinstance(change, dict) else None
        if name not in EXPLAIN_OPTIONS:
            raise ReadOnlyViolation(f"EXPLAIN option {name!r} is not allowed")


def _parts(node: dict[str, Any]) -> list[str]:
    parts = node.get("name_parts")
    if isinstance(parts, list) and parts:
        return [str(p) for p in parts]
    return [str(node.get("name", ""))]


def _words(kind: str) -> str:
    """``ShowProcesslistQuery`` -> ``a show processlist query``."""
    return "a " + re.sub(r"(?<!^)(?=[A-Z])", " ", kind).lower()


# ------------------------------------------------------------------ canonical forms
_IDENT = r"(?:[A-Za-z_][A-Za-z0-9_]*|`(?:[^`\\]|\\.)*`)"
_NAMED = re.compile(rf"^(DESCRIBE TABLE|EXISTS TABLE|SHOW CREATE TABLE) ({_IDENT})"
                    rf"(?:\.({_IDENT}))?$", re.DOTALL)


def check_canonical(text: str, policy: Policy) -> None:
    """``DESCRIBE TABLE``, ``EXISTS TABLE`` and ``SHOW CREATE TABLE``, which the engine
    parses but cannot write as JSON: ``text`` is the engine's own single-line
    formatting of the statement (``formatQuerySingleLine``), so it allows one spelling
    of each, with a plain table name and nothing after it."""
    match = _NAMED.match(text)
    if match is None:
        raise ReadOnlyViolation(STATEMENTS + " (DESCRIBE, EXISTS and SHOW CREATE name one "
                                "table, with no clause after it)")
    first, second = _unquote(match.group(2)), match.group(3)
    policy.table([first, _unquote(second)] if second else [first])


def _unquote(ident: str) -> str:
    if ident.startswith("`"):
        return re.sub(r"\\(.)", r"\1", ident[1:-1], flags=re.DOTALL)
    return ident
