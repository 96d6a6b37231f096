"""Core statements built once, compiled by SQLAlchemy, run on PostgreSQL's driver.

A handler's hot statements (a share's insert, a state move, a claim before an email) are
SQLAlchemy Core statements built once at import. Run through SQLAlchemy, each costs about
0.3 ms of CPU (its cache key, execution context, adapted cursor and result objects) for a
statement that costs 0.12 ms on psycopg alone. ``Database.fetch`` compiles such a statement
once per schema and set of parameter names, with SQLAlchemy's own compiler, and keeps what
SQLAlchemy would do around the cursor: the SQL with the schema translated, each
parameter's bind processing (an enum to its value, an aware datetime to UTC, a naive one
refused) and each returned column's result processing. Only the round trip goes to the
driver.

Only a statement built once belongs here: the compiled form is kept per statement. What
SQLAlchemy does at each execution is refused, with the reason: a parameter it expands then
(``IN`` of a list; write equalities), a column default it computes then (give the value),
a returned column processed by each result's type code (NUMERIC, FLOAT), and a textual
statement, which does not say whether it returns rows.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, Dialect, Executable
from sqlalchemy.sql.compiler import SQLCompiler

_EXPANDED: Final = "__[POSTCOMPILE_"
"""How SQLAlchemy marks, in compiled SQL, a parameter it expands at execution."""

Processor = Callable[[Any], Any]


class NotCompiledOnceError(ValueError):
    """A statement that needs SQLAlchemy at each execution: an expanding parameter, or a
    column default computed in Python."""


@dataclass(frozen=True, slots=True)
class CompiledStatement:
    """A statement as SQLAlchemy compiled it for one schema and set of parameter names."""

    statement: Executable
    """Kept: the cache of compiled statements is keyed by its identity."""
    sql: str
    compiled: SQLCompiler
    bind_processors: tuple[tuple[str, Processor], ...]
    row: type[tuple[Any, ...]] | None
    """Each returned row as a named tuple of the statement's columns; None: no rows."""
    result_processors: tuple[Processor | None, ...]

    def parameters(self, given: Mapping[str, Any]) -> MutableMapping[str, Any]:
        """The driver's parameters: SQLAlchemy's (defaults of bound values included), each
        processed as SQLAlchemy processes it for the dialect."""
        values = self.compiled.construct_params(dict(given))
        for name, process in self.bind_processors:
            if name in values:
                values[name] = process(values[name])
        return values

    def rows(self, fetched: Sequence[tuple[Any, ...]]) -> list[Any]:
        if self.row is None:
            return []
        make = self.row._make  # type: ignore[attr-defined]
        if not any(self.result_processors):
            return [make(row) for row in fetched]
        processors = self.result_processors
        return [
            make(
                value if process is None else process(value)
                for process, value in zip(processors, row, strict=True)
            )
            for row in fetched
        ]


def _row_type(names: list[str]) -> type[tuple[Any, ...]]:
    # Made at run time, from a statement's columns, which a ``NamedTuple`` class cannot be.
    factory: Callable[[str, list[str]], type[tuple[Any, ...]]] = namedtuple
    return factory("Row", names)


def _result_processor(column: ColumnElement[Any], dialect: Dialect) -> Processor | None:
    """SQLAlchemy's processing of a returned column, decided without the driver's type code
    of the result (which the compiled form cannot know): a type that needs it (NUMERIC and
    FLOAT on psycopg) is refused, with the column named."""
    try:
        return column.type.dialect_impl(dialect).result_processor(dialect, None)
    except (TypeError, ValueError, LookupError) as error:
        raise NotCompiledOnceError(
            f"the column {column.key!r} ({column.type}) is processed by the type code of each "
            "result: run the statement through SQLAlchemy"
        ) from error


def compile_statement(
    statement: Executable, dialect: Dialect, schema: str | None, names: Sequence[str]
) -> CompiledStatement:
    """``statement`` compiled for ``dialect``, its unqualified tables in ``schema``, for
    parameters of these ``names`` (an INSERT's or UPDATE's columns are the names given)."""
    translate = None if schema is None else {None: schema}
    compiled = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect,
        column_keys=list(names),
        schema_translate_map=translate,
        render_schema_translate=translate is not None,
    )
    assert isinstance(compiled, SQLCompiler)
    sql = compiled.string
    if _EXPANDED in sql:
        raise NotCompiledOnceError(
            "a statement with an expanding parameter is compiled at each execution: "
            "run it through SQLAlchemy"
        )
    if compiled.insert_prefetch or compiled.update_prefetch:
        prefetched = [*compiled.insert_prefetch, *compiled.update_prefetch]
        computed = ", ".join(column.name for column in prefetched)
        raise NotCompiledOnceError(
            f"columns whose values SQLAlchemy computes at each execution ({computed}) must "
            "be given, or the statement run through SQLAlchemy"
        )
    bind_processors = []
    for bind, name in compiled.bind_names.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            bind_processors.append((compiled.escaped_bind_names.get(name, name), process))
    columns = getattr(statement, "exported_columns", None)
    if columns is None:
        raise NotCompiledOnceError(
            "only SELECT, INSERT, UPDATE and DELETE statements say which rows they return: "
            "run a textual statement through SQLAlchemy"
        )
    row: type[tuple[Any, ...]] | None = None
    result_processors: list[Processor | None] = []
    if columns:
        row = _row_type(list(columns.keys()))
        result_processors = [_result_processor(column, dialect) for column in columns]
    return CompiledStatement(
        statement=statement,
        sql=sql,
        compiled=compiled,
        bind_processors=tuple(bind_processors),
        row=row,
        result_processors=tuple(result_processors),
    )
