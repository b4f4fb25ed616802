from django.urls import path

from feedback.api_exports import StudyJudgmentsExport, StudyProfilesExport, StudyRatingsExport

urlpatterns = [
    path("studies/<int:pk>/export/", StudyJudgmentsExport.as_view(), name="api-study-export"),
    path("studies/<int:pk>/export/profiles/", StudyProfilesExport.as_view(), name="api-study-export-profiles"),
    path("studies/<int:pk>/export/ratings/", StudyRatingsExport.as_view(), name="api-study-export-ratings"),
]
