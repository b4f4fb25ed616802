"""Who may call which API endpoint.

Two kinds of callers: researchers (staff accounts, session or token) and annotators (one user per join,
token from POST /studies/{id}/join/). Object-level checks (researcher *of this study*, annotator *of this
study*) are the access helpers in feedback.api_views; these classes are the coarse gate before them.
"""

from __future__ import annotations

from drf_spectacular.drainage import set_override
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from feedback import selectors


class AnnotatorTokenAuthentication(TokenAuthentication):
    """DRF token auth that loads the user's annotator (and its study) in the same query.

    Annotators call the API in a tight loop (next-pair, judgment); this saves a query on every call.
    """

    def authenticate_credentials(self, key):
        token = Token.objects.select_related("user__annotator__study").filter(key=key).first()
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        return token.user, token


# Same header and scheme as DRF's TokenAuthentication: one "tokenAuth" component in the OpenAPI schema.
set_override(AnnotatorTokenAuthentication, "suppress_collision_warning", True)


def annotator_of(user):
    """The user's annotator: taken from what the token query already loaded, else looked up."""
    cache = getattr(getattr(user, "_state", None), "fields_cache", {})
    if "annotator" in cache:
        return cache["annotator"]
    return selectors.annotator_for_user(user)


class IsResearcher(BasePermission):
    """May create studies: superusers and members of the "researchers" group."""

    message = "only researchers may do this"

    def has_permission(self, request, view) -> bool:
        return selectors.is_researcher(request.user)


class IsAnnotator(BasePermission):
    """The caller is an annotator (a user created by joining a study).

    The annotator is looked up once and cached on the request for the view (`request.annotator`).
    """

    message = "this endpoint is for annotators (join a study first)"

    def has_permission(self, request, view) -> bool:
        if not hasattr(request, "annotator"):
            request.annotator = annotator_of(request.user) if request.user.is_authenticated else None
        return request.annotator is not None
