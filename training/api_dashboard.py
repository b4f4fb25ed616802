"""Dashboard numbers and model downloads over the API (/api/v1/).

GET studies/{id}/dashboard/?group_by=<field>                   the study_dashboard dict (JSON)
GET studies/{id}/annotators/{aid}/reward-model/                one annotator's standalone reward model (zip)
GET studies/{id}/group-models/?group_by=<field>&group=<name>   a group's centroid reward model (zip)
GET studies/{id}/model/                                        the active version's checkpoint (zip)

Researchers of the study only (401 anonymous, 404 missing study, 403 anyone else) — except that an
annotator may download their OWN reward model. 409 while the study has no trained model.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback import selectors
from feedback.models import Annotator
from feedback.permissions import StudyResearcherMixin
from feedback.profile_schema import groupable_fields
from training import downloads
from training.downloads import zip_response
from training.selectors import DEFAULT_GROUP_BY, dashboard_data

_ERRORS = {
    400: OpenApiResponse(description="Invalid request (e.g. an unknown group_by field)"),
    401: OpenApiResponse(description="Not authenticated"),
    403: OpenApiResponse(description="Not a researcher of this study"),
    404: OpenApiResponse(description="No such study / annotator / group"),
}
_NO_MODEL = {409: OpenApiResponse(description="No model has been trained for this study yet")}
_GROUP_BY = OpenApiParameter(
    "group_by", OpenApiTypes.STR, enum=groupable_fields(), default=DEFAULT_GROUP_BY,
    description="The profile field to slice by (stated_prefs.<attribute> buckets sliders low/mid/high).",
)


class JsonErrorsAnyAccept(DefaultContentNegotiation):
    """Downloads answer zip files whatever Accept says; errors are always JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class _StudyAPIView(APIView):
    # Token first, so an anonymous caller gets 401 with "WWW-Authenticate: Token".
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonErrorsAnyAccept

    def group_by(self, request: Request) -> str:
        field = request.query_params.get("group_by") or DEFAULT_GROUP_BY
        if field not in groupable_fields():
            raise ValidationError({"group_by": f"cannot group by {field!r}; choose one of {groupable_fields()}"})
        return field


def _zip_or_409(build) -> HttpResponse | Response:
    try:
        return zip_response(build())
    except downloads.NoModelYet as exc:
        return Response({"detail": str(exc), "code": "no_model"}, status=409)
    except downloads.NoSuchGroup as exc:
        raise NotFound(str(exc)) from exc


class StudyDashboardView(StudyResearcherMixin, _StudyAPIView):
    @extend_schema(
        parameters=[_GROUP_BY],
        responses={200: OpenApiTypes.OBJECT, **_ERRORS},
        summary="Dashboard numbers of a study, overall and per profile group (researchers of the study only)",
        description="Progress; a Bradley–Terry leaderboard of generator models with bootstrap 95% CIs, overall "
        "and per group; within- and between-group agreement (pairwise, Krippendorff's alpha); held-out "
        "reward-model accuracy per group (personalized vs population); rank correlation between the groups' "
        "leaderboards; group × group cross accuracy of the groups' centroid models; a 2-D latent map; stated "
        "vs revealed preferences; per-annotator quality flags (pseudonyms only). Undefined statistics are null.",
    )
    def get(self, request: Request, pk: int) -> Response:
        study = self.get_study()
        return Response(dashboard_data(study, self.group_by(request)))


class AnnotatorRewardModelView(_StudyAPIView):
    @extend_schema(
        responses={(200, "application/zip"): OpenApiTypes.BINARY, **_ERRORS, **_NO_MODEL},
        summary="Download one annotator's personal reward model as a zip (researchers, or that annotator)",
        description="A standalone model (personalization.load_reward_model) of the annotator's current "
        "posterior under the active model version, with a README.md on loading it.",
    )
    def get(self, request: Request, pk: int, aid: int) -> HttpResponse | Response:
        own = selectors.own_annotator(user=request.user, study_id=pk, annotator_id=aid)
        if own is not None:
            study = own.study
        else:
            try:
                study = selectors.get_study_for_researcher(user=request.user, pk=pk)
            except DjangoPermissionDenied as exc:
                if selectors.annotator_of(request.user) is not None:
                    # An annotator must not even learn whether another annotator exists (same as predict/).
                    raise NotFound("no such annotator in this study") from exc
                raise PermissionDenied(
                    "only the study's researchers and the annotator themselves may download this"
                ) from exc
        annotator = Annotator.objects.filter(pk=aid, study=study).select_related("study", "profile").first()
        if annotator is None:
            raise NotFound("no such annotator in this study")
        return _zip_or_409(lambda: downloads.annotator_model_zip(annotator))


class GroupModelView(StudyResearcherMixin, _StudyAPIView):
    @extend_schema(
        parameters=[
            _GROUP_BY,
            OpenApiParameter("group", OpenApiTypes.STR, required=True, description="The group, as the dashboard "
                             "names it (e.g. female, 25-34, unanswered, high)."),
        ],
        responses={(200, "application/zip"): OpenApiTypes.BINARY, **_ERRORS, **_NO_MODEL},
        summary="Download a profile group's reward model as a zip (researchers of the study only)",
        description="A standalone model whose weights are the mean of the group's annotators' posterior means.",
    )
    def get(self, request: Request, pk: int) -> HttpResponse | Response:
        study = self.get_study()
        field = self.group_by(request)
        group = request.query_params.get("group")
        if not group:
            raise ValidationError({"group": "required: the group's name as the dashboard shows it"})
        return _zip_or_409(lambda: downloads.group_model_zip(study, field, group))


class StudyModelView(StudyResearcherMixin, _StudyAPIView):
    @extend_schema(
        responses={(200, "application/zip"): OpenApiTypes.BINARY, **_ERRORS, **_NO_MODEL},
        summary="Download the study's active reward model checkpoint as a zip (researchers of the study only)",
    )
    def get(self, request: Request, pk: int) -> HttpResponse | Response:
        study = self.get_study()
        return _zip_or_409(lambda: downloads.study_model_zip(study))
