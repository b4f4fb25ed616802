"""The JSON API (/api/v1/). Views are thin: an access check, then one service or selector call.

The access check of researcher-only views is StudyResearcherMixin (feedback.permissions): its
IsStudyResearcher permission admits the study's researchers and `self.get_study()` hands the view that
study. Error bodies come from feedback.api_errors (settings.REST_FRAMEWORK["EXCEPTION_HANDLER"]).

Authentication: a DRF token ("Authorization: Token <key>", what annotators get from join) or a session
(researchers logged in to the site; unsafe methods then need the CSRF token). Anonymous calls get 401,
callers who may not do something 403, and objects outside the caller's reach 404 where even their
existence is none of the caller's business (an annotator asking about another study).

Pair sides: the API always speaks in the pair's canonical terms. next-pair returns candidate_a as "a" and
candidate_b as "b", and a judgment's "choice" refers to those same a/b. The browser UI randomizes which
side is shown on the left (assignment.shown_order); API clients get that order as `shown_order` and should
display the pair that way, since the judgment records it — but a/b and the choice never depend on it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback import selectors, services
from feedback.api_errors import error_responses
from feedback.forms_research import import_upload_limit
from feedback.importers import ImportFileError
from feedback.models import Annotator, Pair, Profile, Study
from feedback.parsers import StrictJSONParser
from feedback.permissions import (
    AnnotatorTokenAuthentication,
    IsAnnotator,
    IsResearcher,
    StudyResearcherMixin,
)
from feedback.profile_schema import FIELDS_BY_NAME, PREFER_NOT, ProfileError
from feedback.serializers import (
    ConsentResultSerializer,
    ImportErrorsSerializer,
    ImportFileSerializer,
    ImportResultSerializer,
    JoinResultSerializer,
    JoinSerializer,
    JudgmentCreateSerializer,
    JudgmentSerializer,
    MeSerializer,
    NextPairSerializer,
    ProfileFieldSerializer,
    ProfileSerializer,
    ProfileUpdateSerializer,
    ResumeLinkRequestSerializer,
    ResumeLinkSerializer,
    StudyCreateSerializer,
    StudyDetailSerializer,
    StudyJudgmentSerializer,
    StudySerializer,
    judgment_body,
    judgment_create_data,
    next_pair_body,
)


class ApiPagination(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class ChorusAPIView(APIView):
    # Token first, so an anonymous caller gets 401 with "WWW-Authenticate: Token" rather than a bare 403.
    authentication_classes = [AnnotatorTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [StrictJSONParser]


class ChorusListAPIView(ChorusAPIView, GenericAPIView):
    pagination_class = ApiPagination


# ------------------------------------------------------------------------------------------ access helpers


def _get_study(pk: int) -> Study:
    study = Study.objects.filter(pk=pk).first()
    if study is None:
        raise NotFound("no such study")
    return study


def _get_annotator(request) -> Annotator:
    """The caller's annotator (IsAnnotator has looked it up already)."""
    annotator = getattr(request, "annotator", None) or selectors.annotator_of(request.user)
    if annotator is None:
        raise PermissionDenied(IsAnnotator.message)
    return annotator


def _get_annotator_for_study(request, pk: int) -> Annotator:
    """The caller's annotator if it belongs to study `pk`; 404 otherwise (other studies are invisible)."""
    annotator = _get_annotator(request)
    if annotator.study_id != pk:
        raise NotFound("no such study")
    return annotator


def _require_consent(annotator: Annotator) -> None:
    if annotator.study.consent_text and annotator.consented_at is None:
        raise PermissionDenied("this study asks for consent first: POST /api/v1/me/consent/")


# ----------------------------------------------------------------------------------------------- studies


class StudyListCreateView(ChorusListAPIView):
    serializer_class = StudySerializer

    def get_permissions(self):
        if self.request.method == "POST":
            return [IsAuthenticated(), IsResearcher()]
        return super().get_permissions()

    @extend_schema(
        summary="The caller's studies",
        description="Studies the caller is a researcher of (all of them for superusers); "
        "empty for annotators.",
        responses={200: StudySerializer(many=True), **error_responses(401)},
    )
    def get(self, request):
        page = self.paginate_queryset(selectors.study_list_for_user(request.user))
        return self.get_paginated_response(StudySerializer(page, many=True).data)

    @extend_schema(
        summary="Create a study",
        request=StudyCreateSerializer,
        responses={201: StudySerializer, **error_responses(400, 401, 403, 409)},
    )
    def post(self, request):
        serializer = StudyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        study = services.study_create(created_by=request.user, **serializer.validated_data)
        return Response(StudySerializer(study).data, status=status.HTTP_201_CREATED)


class StudyDetailView(StudyResearcherMixin, ChorusAPIView):
    @extend_schema(
        summary="A study with its counts",
        responses={200: StudyDetailSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request, pk: int):
        study = self.get_study()
        counts = selectors.study_counts(study)
        counts_data = {**counts.__dict__, "progress_percent": counts.progress_percent}
        return Response(StudyDetailSerializer(study, context={"counts": counts_data}).data)


class StudyImportView(StudyResearcherMixin, ChorusAPIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        summary="Import prompts and candidate pairs",
        description="The whole file is validated first: on any bad line nothing is stored and every bad line "
        "is reported. Rows already in the study (or repeated in the file: a re-imported file) give 409 with their "
        "lines, storing nothing; send `?allow_duplicates=1` to import them anyway.",
        request={"multipart/form-data": ImportFileSerializer},
        responses={
            201: ImportResultSerializer,
            400: OpenApiResponse(ImportErrorsSerializer, description="Bad lines; nothing was stored"),
            409: OpenApiResponse(ImportErrorsSerializer, description="Duplicate rows; nothing was stored"),
            **error_responses(401, 403, 404),
        },
    )
    def post(self, request, pk: int):
        study = self.get_study()
        serializer = ImportFileSerializer(data=request.data)
        if not serializer.is_valid():
            message = "; ".join(str(m) for m in serializer.errors.get("file", [])) or "invalid upload"
            return Response(
                {"errors": [{"line": 0, "message": f'multipart field "file": {message}'}]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        upload = serializer.validated_data["file"]
        limit = import_upload_limit()
        if upload.size > limit:
            return Response(
                {"errors": [{"line": 0, "message": f"file is larger than {limit} bytes"}]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        allow = str(request.query_params.get("allow_duplicates") or request.data.get("allow_duplicates") or "")
        try:
            # The upload is a (temporary) file: the importer streams it, never reading it whole.
            result = services.study_import(
                study=study, data=upload, filename=upload.name or "", allow_duplicates=allow.lower() in ("1", "true", "yes")
            )
        except ImportFileError as exc:
            return Response({"errors": [e.as_dict() for e in exc.errors]}, status=status.HTTP_400_BAD_REQUEST)
        except services.DuplicateImport as exc:
            body = {
                "detail": str(exc),
                "errors": [{"line": n, "message": "already in the study or repeated in the file"} for n in exc.lines[:1000]],
            }
            return Response(body, status=status.HTTP_409_CONFLICT)
        return Response(ImportResultSerializer(result.as_dict()).data, status=status.HTTP_201_CREATED)


class StudyJudgmentsView(StudyResearcherMixin, ChorusListAPIView):
    serializer_class = StudyJudgmentSerializer

    @extend_schema(
        summary="A study's judgments (researchers)",
        description="Annotators appear by pseudonym only. `page` / `page_size` (max 1000) paginate.",
        responses={200: StudyJudgmentSerializer(many=True), **error_responses(401, 403, 404)},
    )
    def get(self, request, pk: int):
        study = self.get_study()
        qs: QuerySet = selectors.study_judgments(study)
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(StudyJudgmentSerializer(page, many=True).data)


# -------------------------------------------------------------------------------------------- annotators


class JoinView(ChorusAPIView):
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Join a study as an annotator",
        description="Anonymous callers get a new annotator, its API token and a `resume_token` (201); the "
        "resume token is returned only here, once: keep it. Rejoining resumes the same annotator (200) only "
        "with proof: the annotator's own API token (Authorization header) or `resume_token` in the body. The "
        "same `external_id` without proof is refused with 403 and nothing is created, so nobody who only "
        "knows a crowd id gets that participant's credential.",
        request=JoinSerializer,
        responses={201: JoinResultSerializer, 200: JoinResultSerializer, **error_responses(400, 403, 404)},
    )
    def post(self, request, pk: int):
        study = _get_study(pk)
        serializer = JoinSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        annotator, created = self._join(request, study, serializer.validated_data)
        token, _ = Token.objects.get_or_create(user=annotator.user)
        body = {
            "annotator_id": annotator.pk,
            "study_id": study.pk,
            "token": token.key,
            "consent_required": bool(study.consent_text) and annotator.consented_at is None,
        }
        if created:
            body["resume_token"] = services.annotator_resume_secret_issue(annotator=annotator)
        return Response(JoinResultSerializer(body).data, status=201 if created else 200)

    @staticmethod
    def _join(request, study: Study, data: dict[str, Any]) -> tuple[Annotator, bool]:
        annotator = selectors.annotator_of(request.user)
        if annotator is not None and annotator.study_id == study.pk and study.is_open():
            return annotator, False  # authenticated by their own token or session
        try:
            return services.annotator_join(
                study=study, external_id=data["external_id"], resume_secret=data.get("resume_token") or ""
            )
        except services.ResumeRefused as exc:
            raise PermissionDenied({"detail": str(exc), "errors": {"resume_token": (
                "required to resume: the resume_token from this participant's first join"
            )}}) from exc


class ResumeLinkView(StudyResearcherMixin, ChorusAPIView):
    @extend_schema(
        summary="A personal resume link for one participant (researchers of the study)",
        description="For a participant who lost their browser: look them up by crowd id and get a signed link "
        "that logs one browser in as them. It expires after CHORUS_RESUME_LINK_MAX_AGE_SECONDS and works once "
        "(using it, or issuing a new resume secret, revokes it). Send it through the platform's messaging.",
        request=ResumeLinkRequestSerializer,
        responses={200: ResumeLinkSerializer, **error_responses(400, 401, 403, 404)},
    )
    def post(self, request, pk: int):
        study = self.get_study()
        serializer = ResumeLinkRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        annotator = Annotator.objects.filter(study=study, external_id=serializer.validated_data["external_id"]).first()
        if annotator is None:
            raise NotFound("no participant with this external_id in the study")
        token = services.annotator_resume_link_token(annotator=annotator)
        body = {
            "url": f"{settings.PUBLIC_URL}{reverse('feedback:resume', args=[study.slug, token])}",
            "expires_in_seconds": settings.CHORUS_RESUME_LINK_MAX_AGE_SECONDS,
        }
        return Response(ResumeLinkSerializer(body).data)


class AnnotatorView(ChorusAPIView):
    permission_classes = [IsAuthenticated, IsAnnotator]


class MeView(AnnotatorView):
    @extend_schema(summary="The calling annotator", responses={200: MeSerializer, **error_responses(401, 403)})
    def get(self, request):
        return Response(MeSerializer(_get_annotator(request)).data)


class ConsentView(AnnotatorView):
    @extend_schema(
        summary="Record the annotator's consent",
        request=None,
        responses={200: ConsentResultSerializer, **error_responses(401, 403)},
    )
    def post(self, request):
        annotator = services.annotator_consent(annotator=_get_annotator(request))
        return Response(ConsentResultSerializer({"consented_at": annotator.consented_at}).data)


class FinishView(AnnotatorView):
    @extend_schema(
        summary="Finish annotating",
        description="Marks the annotator done and returns the completion code for the crowd platform.",
        request=None,
        responses={200: MeSerializer, **error_responses(401, 403)},
    )
    def post(self, request):
        annotator = services.annotator_finish(annotator=_get_annotator(request))
        return Response(MeSerializer(annotator).data)


def _profile_body(annotator: Annotator, profile: Profile | None) -> dict[str, Any]:
    return {
        "data": profile.data if profile is not None else {},
        "completed_at": annotator.profile_completed_at,
        "prefer_not_to_say": PREFER_NOT,
        "fields": ProfileFieldSerializer(
            [FIELDS_BY_NAME[name] for name in annotator.study.profile_fields if name in FIELDS_BY_NAME],
            many=True,
        ).data,
    }


class ProfileView(AnnotatorView):
    @extend_schema(
        summary="The annotator's profile and the questions the study asks",
        responses={200: ProfileSerializer, **error_responses(401, 403)},
    )
    def get(self, request):
        annotator = _get_annotator(request)
        # A missing profile row (RelatedObjectDoesNotExist is an AttributeError) reads as "nothing answered".
        return Response(_profile_body(annotator, getattr(annotator, "profile", None)))

    @extend_schema(
        summary="Replace the annotator's profile answers",
        request=ProfileUpdateSerializer,
        responses={200: ProfileSerializer, **error_responses(400, 401, 403)},
    )
    def put(self, request):
        annotator = _get_annotator(request)
        serializer = ProfileUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            profile = services.profile_update(annotator=annotator, data=serializer.validated_data["data"])
        except ProfileError as exc:
            return Response(
                {"detail": "invalid profile", "errors": exc.errors}, status=status.HTTP_400_BAD_REQUEST
            )
        return Response(_profile_body(annotator, profile))


class NextPairView(AnnotatorView):
    @extend_schema(
        summary="The annotator's next pair",
        description="Returns the open assignment, or claims a new one. "
        "204 when nothing is left for the caller. "
        '"a"/"b" are the pair\'s canonical candidates; `shown_order` is the display order to use.',
        responses={
            200: NextPairSerializer,
            204: OpenApiResponse(description="Nothing left to judge"),
            **error_responses(401, 403, 404),
        },
    )
    def get(self, request, pk: int):
        annotator = _get_annotator_for_study(request, pk)
        _require_consent(annotator)
        if annotator.completed_at is not None:
            return Response(status=status.HTTP_204_NO_CONTENT)  # finished: nothing more to judge
        # The judged count comes with the assignment (same query): selectors.annotator_progress, for free.
        assignment, done = services.assignment_next_with_progress(annotator=annotator)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        # NextPairSerializer's shape, built directly (serializers.next_pair_body says why).
        return Response(next_pair_body(assignment=assignment, done=done, total=annotator.study.pairs_per_annotator))


class JudgmentCreateView(AnnotatorView):
    @extend_schema(
        summary="Record a judgment of the caller's assigned pair",
        description="Idempotent on `client_key`: the same key with the same pair and answers returns the stored "
        "judgment with 200; the same key with another pair or other answers is 409, with the stored judgment "
        "under `judgment`. An annotator who has finished gets 403.",
        request=JudgmentCreateSerializer,
        responses={201: JudgmentSerializer, 200: JudgmentSerializer, **error_responses(400, 401, 403, 404, 409)},
    )
    def post(self, request):
        annotator = _get_annotator(request)
        data = judgment_create_data(request.data)  # the serializer's result for a plainly valid body
        if data is None:
            serializer = JudgmentCreateSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = dict(serializer.validated_data)
        pair_id = data.pop("pair_id")
        # The pair is not fetched first: the judgment finds an open assignment only for a pair of the
        # annotator's own study, so a reference to it is enough (one query less per judgment). Whether a
        # refused pair is in the study at all (404 rather than 400/409) is asked on that failure path only.
        pair = Pair(id=pair_id, study_id=annotator.study_id)
        pair._state.adding = False
        try:
            judgment, created = services.judgment_create(annotator=annotator, pair=pair, **data)
        except services.ServiceError:
            if not Pair.objects.filter(pk=pair_id, study_id=annotator.study_id).exists():
                raise NotFound("no such pair in your study") from None
            raise
        return Response(judgment_body(judgment), status=201 if created else 200)
