"""Fixed-shape hot-path reads, compiled once per process (benchmarks/judgment_cpu_bench.py says why).

Building and compiling a queryset costs the annotation loop several times what running it does. A read
whose shape never changes is built once — from the very same queryset the ORM would run, for stand-in
values (sentinels) — compiled for the database's backend, and then run with each call's values in the
sentinels' places. Rows become model instances the way QuerySet iteration makes them (the backend's
converters applied, select_related objects attached), or value tuples as values_list gives them.

If a sentinel does not come out as exactly the parameters expected (an ORM that folds, drops or repeats a
value), the compiled form is refused and ``compile_once`` returns None: the caller then runs the ORM
queryset every time, which is always correct.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators

# Stand-ins for the values that vary per call: within every integer column's range (or Django would drop
# the lookup as impossible), and unlike any value a real call or a constant of the query would carry.
SENTINELS = {
    "study": 2_000_000_001, "target": 2_000_000_002, "annotator": 2_000_000_003, "start": 2_000_000_004,
    "id": 2_000_000_005,
}
_BY_VALUE = {v: k for k, v in SENTINELS.items()}


def is_sentinel(param: Any) -> bool:
    return isinstance(param, int) and not isinstance(param, bool) and int(param) in _BY_VALUE


def bind(param: Any, values: Mapping[str, int]) -> Any:
    """The call's value in a sentinel's place, as the same type (psycopg's Int4 for an integer column)."""
    return type(param)(values[_BY_VALUE[int(param)]]) if is_sentinel(param) else param


@dataclass
class Compiled:
    """One compiled read: its SQL and parameters, and what turns its rows into what the queryset yields."""

    sql: str
    params: list[Any]
    query: Any  # the queryset's django.db.models.sql.Query (a fresh compiler per call: no compiling)
    select: Any
    klass_info: Any
    annotation_col_map: Any
    using: str
    _populators: dict[str, Any] = field(default_factory=dict)

    def _rows(self, values: Mapping[str, int]) -> Any:
        with connections[self.using].cursor() as cursor:
            cursor.execute(self.sql, [bind(p, values) for p in self.params])
            results = [cursor.fetchall()]
        compiler = self.query.get_compiler(self.using)  # bound to this thread's connection, for converters
        compiler.select, compiler.klass_info = self.select, self.klass_info
        compiler.annotation_col_map, compiler.col_count = self.annotation_col_map, len(self.select)
        return compiler.results_iter(results)

    def tuples(self, **values: int) -> list[tuple[Any, ...]]:
        """Rows as values_list() gives them."""
        return [tuple(row) for row in self._rows(values)]

    def objects(self, **values: int) -> list[Model]:
        """Model instances as iterating the queryset gives them (select_related objects included)."""
        info = self.klass_info
        start, end = info["select_fields"][0], info["select_fields"][-1] + 1
        init_list = [f[0].target.attname for f in self.select[start:end]]
        if "related" not in self._populators:
            # (django-stubs describe Django 6's signature, with a fetch mode; 5.2 takes three arguments)
            self._populators["related"] = get_related_populators(  # type: ignore[call-arg]
                info, self.select, self.using)
        out = []
        for row in self._rows(values):
            obj = info["model"].from_db(self.using, init_list, row[start:end])
            for populator in self._populators["related"]:
                populator.populate(row, obj)
            out.append(obj)
        return out


_cache: dict[tuple[str, str], Compiled | None] = {}
_lock = threading.Lock()


def compile_once(name: str, using: str, build: Callable[[Mapping[str, int]], QuerySet[Any, Any]],
                 expected: Sequence[str]) -> Compiled | None:
    """The read ``name`` compiled for database ``using``: ``build(SENTINELS)`` must give the queryset, whose
    parameters must hold each of ``expected``'s sentinels exactly as often as listed. None: use the ORM."""
    key = (name, using)
    if key not in _cache:
        with _lock:
            if key not in _cache:
                qs = build(SENTINELS)
                compiler = qs.query.get_compiler(using)
                try:
                    sql, params = compiler.as_sql()
                except EmptyResultSet:  # the ORM decides such a query without the database, every time
                    sql, params = "", []
                found = Counter(_BY_VALUE[int(p)] for p in params if is_sentinel(p))
                ok = bool(sql) and found == Counter(expected)
                _cache[key] = Compiled(sql, list(params), qs.query, compiler.select, compiler.klass_info,
                                       compiler.annotation_col_map, using) if ok else None
    return _cache[key]
