"""/api/v1/ — see feedback.api_views; the OpenAPI schema is at /api/schema/, docs at /api/docs/."""

from django.urls import path

from feedback import api_endpoints
from feedback import api_views as v

app_name = "api"
urlpatterns = [
    path("studies/", v.StudyListCreateView.as_view(), name="study-list"),
    path("studies/<int:pk>/", v.StudyDetailView.as_view(), name="study-detail"),
    path("studies/<int:pk>/import/", v.StudyImportView.as_view(), name="study-import"),
    path("studies/<int:pk>/join/", v.JoinView.as_view(), name="study-join"),
    path("studies/<int:pk>/resume-links/", v.ResumeLinkView.as_view(), name="study-resume-links"),
    path("studies/<int:pk>/next-pair/", v.NextPairView.as_view(), name="next-pair"),
    path("studies/<int:pk>/judgments/", v.StudyJudgmentsView.as_view(), name="study-judgments"),
    path("judgments/", v.JudgmentCreateView.as_view(), name="judgment-create"),
    path("me/", v.MeView.as_view(), name="me"),
    path("me/consent/", v.ConsentView.as_view(), name="me-consent"),
    path("me/profile/", v.ProfileView.as_view(), name="me-profile"),
    path("me/finish/", v.FinishView.as_view(), name="me-finish"),
    # Model endpoints of live-conversation studies (issue 12).
    path("studies/<int:pk>/endpoints/", api_endpoints.EndpointListCreateView.as_view(), name="study-endpoints"),
    path("studies/<int:pk>/endpoints/<int:endpoint_id>/test/", api_endpoints.EndpointTestView.as_view(),
         name="study-endpoint-test"),
]
