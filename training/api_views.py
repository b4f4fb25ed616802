"""Training endpoints of the JSON API (/api/v1/): retrain, model versions, predictions, candidates, settings.

POST  studies/{id}/retrain/                                  queue a global retrain now (202)
GET   studies/{id}/models/                                   the study's model versions, newest first
GET   studies/{id}/annotators/{aid}/predict/?a=<id>&b=<id>   P(annotator prefers a over b) under the active model
GET   studies/{id}/candidates/                               candidates (ids for predict)
PATCH studies/{id}/settings/                                 {"selector", "model_kind"}

Researchers of the study only (401 anonymous, 404 missing study, 403 anyone else), except predict, which
an annotator may call about THEMSELF: any other annotator id is 404 to them, so an annotator can never learn
about another annotator, not even whether the id exists. Authentication, pagination and error bodies are
the same as feedback.api_views (the base classes come from there); the researcher-only views take
feedback.permissions.StudyResearcherMixin, like every researcher-only API view.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from feedback import selectors
from feedback.api_errors import error_responses
from feedback.api_views import ChorusAPIView, ChorusListAPIView
from feedback.models import Annotator, Candidate
from feedback.permissions import StudyResearcherMixin
from feedback.serializers import StudySerializer
from training import selectors as training_selectors
from training import services
from training.broker import broker_down
from training.models import ModelVersion
from training.serializers import (
    ModelVersionSerializer,
    PredictionSerializer,
    PredictQuerySerializer,
    RetrainRequestSerializer,
    RetrainResultSerializer,
    StudyCandidateSerializer,
    TrainingSettingsSerializer,
)

_NO_MODEL = {409: OpenApiResponse(description="No model has been trained for this study yet")}


class RetrainView(StudyResearcherMixin, ChorusAPIView):
    @extend_schema(
        summary="Retrain the study's global model now (researchers of the study)",
        description="Queues a training job on the `gpu` queue over every judgment so far and returns at once. "
        "Idempotent while a job of that kind is queued or training (the pending version is returned). The "
        "new version becomes active only if it is at least as accurate on the held-out slice as the active "
        "one; follow it with GET studies/{id}/models/. 400 when the study has fewer than 2 non-tie judgments "
        "outside the held-out slice (nothing to learn from yet).",
        request=RetrainRequestSerializer,
        responses={202: RetrainResultSerializer, **error_responses(400, 401, 403, 404)},
    )
    def post(self, request, pk: int):
        study = self.get_study()
        serializer = RetrainRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            version = services.model_version_request(study=study, kind=serializer.validated_data.get("kind"))
        except services.NotEnoughJudgments as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        version.refresh_from_db(fields=["status", "enqueued_at"])  # eager (embedded) mode has trained it already
        down = version.status == ModelVersion.Status.QUEUED and version.enqueued_at is None and broker_down()
        body: dict = {"model_version_id": version.pk, "status": version.status, "broker_down": down}
        if down:
            body["detail"] = ("the task broker is unreachable: the job is queued and will be sent automatically "
                              "once the broker is back")
        return Response(RetrainResultSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class ModelVersionListView(StudyResearcherMixin, ChorusListAPIView):
    serializer_class = ModelVersionSerializer

    @extend_schema(
        summary="The study's model versions, newest first (researchers of the study)",
        description="status: queued | training | ready (trained, not better than the active one) | active | "
        "failed | retired. metrics holds held-out accuracy overall and per profile group, personalized vs "
        "population. `page` / `page_size` paginate.",
        responses={200: ModelVersionSerializer(many=True), **error_responses(401, 403, 404)},
    )
    def get(self, request, pk: int):
        study = self.get_study()
        page = self.paginate_queryset(ModelVersion.objects.filter(study=study).order_by("-created_at", "-id"))
        return self.get_paginated_response(ModelVersionSerializer(page, many=True).data)


def _get_annotator_for_predict(request, pk: int, aid: int) -> Annotator:
    """Researchers of the study may ask about any of its annotators; an annotator only about themself."""
    own = selectors.own_annotator(user=request.user, study_id=pk, annotator_id=aid)
    if own is not None:
        return own
    try:
        study = selectors.get_study_for_researcher(user=request.user, pk=pk)
    except (Http404, PermissionDenied):
        if selectors.annotator_of(request.user) is not None:
            # An annotator: anything but their own id in their own study is "not found", study or not.
            raise NotFound("no such annotator") from None
        raise
    annotator = Annotator.objects.filter(pk=aid, study=study).select_related("study", "profile").first()
    if annotator is None:
        raise NotFound("no such annotator in this study")
    return annotator


class PredictView(ChorusAPIView):
    @extend_schema(
        summary="Predict an annotator's choice between two candidates",
        description="Uses the study's active model and the annotator's current posterior (their labels so "
        "far and profile). Both candidates must answer the same prompt of this study. Researchers of the "
        "study may ask about any of its annotators; an annotator only about themself.",
        parameters=[
            OpenApiParameter("a", OpenApiTypes.INT, required=True, description="Candidate id"),
            OpenApiParameter("b", OpenApiTypes.INT, required=True, description="Candidate id (same prompt)"),
        ],
        responses={200: PredictionSerializer, **error_responses(400, 401, 403, 404), **_NO_MODEL},
    )
    def get(self, request, pk: int, aid: int):
        annotator = _get_annotator_for_predict(request, pk, aid)
        query = PredictQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        ids = [query.validated_data["a"], query.validated_data["b"]]
        found = Candidate.objects.select_related("prompt").filter(pk__in=ids, prompt__study_id=annotator.study_id)
        by_id = {c.pk: c for c in found}
        missing = [name for name, i in zip("ab", ids, strict=True) if i not in by_id]
        if missing:
            raise ValidationError({m: "no such candidate in this study" for m in missing})
        a, b = by_id[ids[0]], by_id[ids[1]]
        if a.prompt_id != b.prompt_id:
            raise ValidationError({"b": "both candidates must answer the same prompt"})
        try:
            out = training_selectors.predict_for_annotator(annotator=annotator, candidate_a=a, candidate_b=b)
        except LookupError as exc:
            return Response({"detail": str(exc), "code": "no_model"}, status=status.HTTP_409_CONFLICT)
        return Response(PredictionSerializer(out).data)


class CandidateListView(StudyResearcherMixin, ChorusListAPIView):
    serializer_class = StudyCandidateSerializer

    @extend_schema(
        summary="The study's candidates (researchers of the study)",
        description="Ordered by prompt, then candidate. `page` / `page_size` (max 1000) paginate.",
        responses={200: StudyCandidateSerializer(many=True), **error_responses(401, 403, 404)},
    )
    def get(self, request, pk: int):
        study = self.get_study()
        qs = (
            Candidate.objects.filter(prompt__study=study)
            .select_related("prompt")
            .only("id", "prompt_id", "prompt__text", "model_name", "text")
            .order_by("prompt_id", "id")
        )
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(StudyCandidateSerializer(page, many=True).data)


class TrainingSettingsView(StudyResearcherMixin, ChorusAPIView):
    @extend_schema(
        summary="Set the study's pair selector and model kind (researchers of the study)",
        description="selector: one of the registered selectors (random, uncertainty, info_gain, mixed); "
        "model_kind: bt | vpl | pal. Both optional. The model kind applies from the next retrain; the "
        "active version keeps serving until then. Returns the study, as GET /studies/{id}/ does.",
        request=TrainingSettingsSerializer,
        responses={200: StudySerializer, **error_responses(400, 401, 403, 404)},
    )
    def patch(self, request, pk: int):
        study = self.get_study()
        serializer = TrainingSettingsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        study = services.study_training_settings_update(study=study, **serializer.validated_data)
        return Response(StudySerializer(study).data)
