"""REST export endpoints: a study's judgments (TRL preference rows) and its annotators' profiles.

GET /api/v1/studies/{id}/export/?format=jsonl|csv|parquet
GET /api/v1/studies/{id}/export/profiles/?format=jsonl|csv|parquet

Researchers of the study only (404 for a missing study, 403 for anyone else). JSONL and CSV stream as
they are read, batch by batch through an async iterator (the app runs under ASGI, where Django would
collect a sync iterator whole first); Parquet is written batch by batch to a temporary file, which is
then streamed. Errors use the API's {"detail", "errors"} shape (settings.REST_FRAMEWORK EXCEPTION_HANDLER).
"""

from __future__ import annotations

import tempfile

from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from feedback import exports
from feedback.models import Study
from feedback.permissions import StudyResearcherMixin


class FormatIsTheFileType(DefaultContentNegotiation):
    """`?format=` names the export's file type here, not a DRF renderer: errors are always JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def export_response(export: exports.Export, study: Study, fmt: str, *, asgi: bool = False) -> HttpResponseBase:
    name = exports.filename(study, export.kind, fmt)
    if fmt == "parquet":
        sink = tempfile.TemporaryFile(suffix=".parquet")  # gone once the response closes it
        try:
            exports.write_parquet(export, sink)
            sink.seek(0)
        except BaseException:
            sink.close()
            raise
        response: HttpResponseBase = FileResponse(
            sink, as_attachment=True, filename=name, content_type=exports.CONTENT_TYPES[fmt]
        )
        return response
    chunks = exports.jsonl_chunks(export) if fmt == "jsonl" else exports.csv_chunks(export)
    # Under ASGI an async iterator: Django would buffer a sync one whole before sending a byte. A sync
    # server (WSGI, the test client) streams the sync iterator as it is.
    content = exports.async_batches(chunks) if asgi else chunks
    response = StreamingHttpResponse(content, content_type=exports.CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _is_asgi(request: Request) -> bool:
    return isinstance(request._request, ASGIRequest)


_FORMAT_PARAM = OpenApiParameter(
    "format", OpenApiTypes.STR, enum=list(exports.FORMATS), default="jsonl", description="File type."
)


class _StudyExportView(StudyResearcherMixin, APIView):
    # The project's default authentication (session first): an anonymous caller gets 403, as it always has.
    renderer_classes = [JSONRenderer]
    content_negotiation_class = FormatIsTheFileType
    kind = ""

    def _format(self, request: Request) -> str:
        fmt = request.query_params.get("format") or "jsonl"
        if fmt not in exports.FORMATS:
            raise ValidationError({"format": f"must be one of {list(exports.FORMATS)}"})
        return fmt


class StudyJudgmentsExport(_StudyExportView):
    @extend_schema(
        parameters=[_FORMAT_PARAM],
        responses={200: OpenApiTypes.BINARY},
        summary="Export the study's judgments as TRL preference rows (researchers of the study only)",
    )
    def get(self, request: Request, pk: int) -> HttpResponseBase:
        study = self.get_study()
        return export_response(exports.judgments_export(study), study, self._format(request), asgi=_is_asgi(request))


class StudyProfilesExport(_StudyExportView):
    @extend_schema(
        parameters=[_FORMAT_PARAM],
        responses={200: OpenApiTypes.BINARY},
        summary="Export one pseudonymized row per annotator with their profile (researchers of the study only)",
    )
    def get(self, request: Request, pk: int) -> HttpResponseBase:
        study = self.get_study()
        return export_response(exports.profiles_export(study), study, self._format(request), asgi=_is_asgi(request))


class StudyRatingsExport(_StudyExportView):
    @extend_schema(
        parameters=[_FORMAT_PARAM],
        responses={200: OpenApiTypes.BINARY},
        summary="Export the study's 1-100 ratings, one row per rated response (researchers of the study only)",
    )
    def get(self, request: Request, pk: int) -> HttpResponseBase:
        study = self.get_study()
        return export_response(exports.ratings_export(study), study, self._format(request), asgi=_is_asgi(request))
