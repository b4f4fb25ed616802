"""Every /api/v1/ route of the feedback app (views in feedback.api_views, api_endpoints, api_exports).

config/urls.py includes this once under api/v1/, next to training/api_urls.py. URL names carry an "api-"
prefix and no namespace, in both apps' api_urls.py: reverse("api-study-export", args=[pk]). The OpenAPI
schema is at /api/schema/, docs at /api/docs/.
"""

from django.urls import path

from feedback import api_endpoints, api_exports
from feedback import api_views as v

urlpatterns = [
    path("studies/", v.StudyListCreateView.as_view(), name="api-study-list"),
    path("studies/<int:pk>/", v.StudyDetailView.as_view(), name="api-study-detail"),
    path("studies/<int:pk>/import/", v.StudyImportView.as_view(), name="api-study-import"),
    path("studies/<int:pk>/join/", v.JoinView.as_view(), name="api-study-join"),
    path("studies/<int:pk>/resume-links/", v.ResumeLinkView.as_view(), name="api-study-resume-links"),
    path("studies/<int:pk>/next-pair/", v.NextPairView.as_view(), name="api-next-pair"),
    path("studies/<int:pk>/judgments/", v.StudyJudgmentsView.as_view(), name="api-study-judgments"),
    path("judgments/", v.JudgmentCreateView.as_view(), name="api-judgment-create"),
    path("me/", v.MeView.as_view(), name="api-me"),
    path("me/consent/", v.ConsentView.as_view(), name="api-me-consent"),
    path("me/profile/", v.ProfileView.as_view(), name="api-me-profile"),
    path("me/finish/", v.FinishView.as_view(), name="api-me-finish"),
    # Model endpoints of live-conversation studies (issue 12).
    path("studies/<int:pk>/endpoints/", api_endpoints.EndpointListCreateView.as_view(), name="api-study-endpoints"),
    path("studies/<int:pk>/endpoints/<int:endpoint_id>/test/", api_endpoints.EndpointTestView.as_view(),
         name="api-study-endpoint-test"),
    # Exports (feedback.api_exports).
    path("studies/<int:pk>/export/", api_exports.StudyJudgmentsExport.as_view(), name="api-study-export"),
    path("studies/<int:pk>/export/profiles/", api_exports.StudyProfilesExport.as_view(),
         name="api-study-export-profiles"),
    path("studies/<int:pk>/export/ratings/", api_exports.StudyRatingsExport.as_view(),
         name="api-study-export-ratings"),
]
