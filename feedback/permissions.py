"""Who may call which API endpoint.

Two kinds of callers: researchers (staff accounts, session or token) and annotators (one user per join,
token from POST /studies/{id}/join/). "Researcher of this study" is IsStudyResearcher with
StudyResearcherMixin, on every researcher-only API view (the rule itself is
feedback.selectors.get_study_for_researcher; HTML pages use feedback.decorators.researcher_study_required).
"This annotator's own data" is feedback.selectors.own_annotator (predict, the reward-model download, the
WebSocket consumer); the annotator endpoints under /api/v1/me/ and next-pair take IsAnnotator.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models import Model
from drf_spectacular.drainage import set_override
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission, IsAuthenticated

from feedback import selectors
from feedback.models import Annotator, Study


class _TokenQuery:
    """Token -> user -> annotator -> study in one query, its SQL compiled once per process and database.

    Compiling this four-table select_related queryset cost more CPU than running it: about 0.75 ms of every
    API call under load (profiled; the query itself ~0.1 ms). The SQL depends only on the models, so it is
    generated once from the very same queryset and then run with the key as its only parameter; rows become
    model instances as in Django's ModelIterable (field converters, Model.from_db, related caches). If the
    columns ever come back other than expected, it falls back to the ORM queryset for good.
    """

    RELATED = "user__annotator__study"

    def __init__(self) -> None:
        self._compiled: dict[str, str | None] = {}
        self._checked: set[str] = set()  # databases whose result columns were found as expected
        # Per database: the column names, each column's Col and field converters (from_db_value), and per
        # model its slice of the row, attnames and pk position. Fixed by the models too, and ~40 % of this
        # query's CPU when worked out again on every call (profiled with benchmarks/judgment_cpu_bench.py).
        # The backend's own converters are asked of the request's connection (they may depend on it).
        self._layouts: dict[str, tuple[list[str | None], list[tuple[int, Any, list[Any]]], list[tuple]]] = {}

    @staticmethod
    def _models() -> list[type[Model]]:
        return [Token, get_user_model(), Annotator, Study]

    def _orm(self, using: str, key: str) -> Token | None:
        return Token.objects.using(using).select_related(self.RELATED).filter(key=key).first()

    def _layout(self, using: str, connection: Any):
        layout = self._layouts.get(using)
        if layout is None:
            models = self._models()
            fields = [f for model in models for f in model._meta.concrete_fields]
            converters = []
            for i, f in enumerate(fields):
                col = f.get_col(f.model._meta.db_table)
                converters.append((i, col, col.get_db_converters(connection)))
            slices = []
            start = 0
            for model in models:
                concrete = model._meta.concrete_fields
                slices.append(
                    (model, start, start + len(concrete), [f.attname for f in concrete], concrete.index(model._meta.pk))
                )
                start += len(concrete)
            layout = self._layouts[using] = ([f.column for f in fields], converters, slices)
        return layout

    def get(self, key: str) -> Token | None:
        using = router.db_for_read(Token)
        if using not in self._compiled:
            sql, params = (
                Token.objects.using(using)
                .select_related(self.RELATED)
                .filter(key="?")[:1]
                .query.sql_with_params()
            )
            self._compiled[using] = sql if list(params) == ["?"] else None
        sql = self._compiled[using]
        if sql is None:
            return self._orm(using, key)
        connection = connections[using]
        columns, converters, slices = self._layout(using, connection)
        with connection.cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
            # The columns are checked on the first call only: the SQL is fixed for the process, and building
            # the cursor's description (~53 column objects) cost ~0.3 ms of every API call.
            names = [col[0] for col in cursor.description or ()] if using not in self._checked else columns
        if names != columns:
            self._compiled[using] = None  # not the layout this code expects: let the ORM do it from now on
            return self._orm(using, key)
        self._checked.add(using)
        if row is None:
            return None
        values = list(row)
        ops = connection.ops
        for i, col, field_converters in converters:
            for convert in ops.get_db_converters(col) + field_converters:
                values[i] = convert(values[i], col, connection)
        objs: list[Model | None] = []
        for model, start, end, attnames, pk_at in slices:
            chunk = values[start:end]
            objs.append(None if chunk[pk_at] is None else model.from_db(using, attnames, chunk))
        token, user, annotator, study = objs
        if not isinstance(token, Token) or user is None:  # cannot happen (inner join on the user)
            return None
        token_user = Token._meta.get_field("user")
        annotator_user = Annotator._meta.get_field("user")
        token_user.set_cached_value(token, user)
        token_user.remote_field.set_cached_value(user, token)
        # A user without an annotator (a researcher) caches None, as select_related does: no lookup later.
        annotator_user.remote_field.set_cached_value(user, annotator)
        if annotator is not None:
            annotator_user.set_cached_value(annotator, user)
            Annotator._meta.get_field("study").set_cached_value(annotator, study)
        return token


_token_query = _TokenQuery()


class AnnotatorTokenAuthentication(TokenAuthentication):
    """DRF token auth that loads the user's annotator (and its study) in the same query.

    Annotators call the API in a tight loop (next-pair, judgment); this saves a query on every call, and
    the query's SQL is compiled only once per process (_TokenQuery).
    """

    def authenticate_credentials(self, key):
        token = _token_query.get(key)
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        return token.user, token


# Same header and scheme as DRF's TokenAuthentication: one "tokenAuth" component in the OpenAPI schema.
set_override(AnnotatorTokenAuthentication, "suppress_collision_warning", True)


class IsResearcher(BasePermission):
    """May create studies: superusers and members of the "researchers" group."""

    message = "only researchers may do this"

    def has_permission(self, request, view) -> bool:
        return selectors.is_researcher(request.user)


class IsStudyResearcher(BasePermission):
    """The caller is a researcher of the study in the URL (`pk`): 404 when it does not exist, 403 otherwise.

    For views with StudyResearcherMixin: it asks the view's get_study(), so the handler reuses the study the
    check loaded. The selector raises Django's Http404 / PermissionDenied, which DRF answers as 404 / 403
    with the selector's message, exactly as when the handlers called it themselves.
    """

    message = "you are not a researcher of this study"

    def has_permission(self, request, view) -> bool:
        if not request.user.is_authenticated:
            return False  # DRF answers NotAuthenticated (401, or 403 under session-first authentication)
        # A method the view does not handle stays 405 and OPTIONS stays the view's metadata, whoever asks:
        # the check used to run inside the handlers, after DRF's method dispatch.
        if request.method == "OPTIONS" or request.method not in view.allowed_methods:
            return True
        view.get_study()
        return True


class StudyResearcherMixin:
    """Every researcher-only API view under /api/v1/studies/<pk>/: IsStudyResearcher, and the study it admitted.

    Put it first among the bases (its permission_classes win); the transport base (authentication, renderers,
    parsers) stays the view's own. `get_study()` runs the selector once per request: DRF builds a new view
    instance per request, so the study kept on it is this request's.
    """

    permission_classes = [IsAuthenticated, IsStudyResearcher]
    request: Any
    kwargs: dict[str, Any]
    _study: Study | None = None

    def get_study(self) -> Study:
        if self._study is None:
            self._study = selectors.get_study_for_researcher(user=self.request.user, pk=self.kwargs["pk"])
        return self._study


class IsAnnotator(BasePermission):
    """The caller is an annotator (a user created by joining a study).

    The annotator is looked up once and cached on the request for the view (`request.annotator`).
    """

    message = "this endpoint is for annotators (join a study first)"

    def has_permission(self, request, view) -> bool:
        if not hasattr(request, "annotator"):
            request.annotator = selectors.annotator_of(request.user) if request.user.is_authenticated else None
        return request.annotator is not None
