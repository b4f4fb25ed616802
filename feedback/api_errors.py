"""The API's error bodies, on every endpoint: {"detail": message} and, for invalid input, {"errors": {field: message}}.

settings.REST_FRAMEWORK["EXCEPTION_HANDLER"] names `api_exception_handler`, so exports, dashboard and
downloads answer errors in the same shape as the rest of /api/v1/. `error_responses` documents the same
bodies in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler

from feedback import services
from feedback.serializers import ErrorSerializer, FieldErrorsSerializer, JudgmentSerializer

SERVICE_ERROR_STATUS = {
    "invalid": status.HTTP_400_BAD_REQUEST,
    "not_found": status.HTTP_404_NOT_FOUND,
    "forbidden": status.HTTP_403_FORBIDDEN,
    "conflict": status.HTTP_409_CONFLICT,
}


def _flatten_errors(detail: Any) -> dict[str, str]:
    """DRF's nested error lists -> {field: "message; message"} (non-field errors under "non_field_errors")."""
    if isinstance(detail, dict):
        out: dict[str, str] = {}
        for key, value in detail.items():
            if isinstance(value, dict):
                for sub, msg in _flatten_errors(value).items():
                    out[f"{key}.{sub}"] = msg
            else:
                out[str(key)] = "; ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        return out
    items = detail if isinstance(detail, list) else [detail]
    return {"non_field_errors": "; ".join(str(v) for v in items)}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error is JSON: {"detail": message} and, for invalid input, {"errors": {field: message}}."""
    if isinstance(exc, services.ClientKeyConflict):
        body = {"detail": str(exc), "errors": {"client_key": "already used for another judgment"},
                "judgment": JudgmentSerializer(exc.judgment).data}
        return Response(body, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, services.ServiceError):
        return Response({"detail": str(exc)}, status=SERVICE_ERROR_STATUS.get(exc.code, 400))
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, ValidationError):
        response.data = {"detail": "invalid request", "errors": _flatten_errors(exc.detail)}
    elif response is not None and isinstance(exc, ParseError):
        response.data = {"detail": str(exc.detail), "errors": {"body": str(exc.detail)}}
    return response


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """The OpenAPI responses for these error statuses, in the shapes api_exception_handler answers."""
    words = {
        400: "Invalid request",
        401: "Not authenticated",
        403: "Not allowed",
        404: "Not found",
        409: "Conflict",
    }
    shape = {400: FieldErrorsSerializer}
    return {c: OpenApiResponse(shape.get(c, ErrorSerializer), description=words[c]) for c in codes}
