"""Training endpoints under /api/v1/ (see training.api_views)."""

from django.urls import path

from training import api_views as v

urlpatterns = [
    path("studies/<int:pk>/retrain/", v.RetrainView.as_view(), name="api-study-retrain"),
    path("studies/<int:pk>/models/", v.ModelVersionListView.as_view(), name="api-study-models"),
    path(
        "studies/<int:pk>/annotators/<int:aid>/predict/", v.PredictView.as_view(), name="api-annotator-predict"
    ),
    path("studies/<int:pk>/candidates/", v.CandidateListView.as_view(), name="api-study-candidates"),
    path("studies/<int:pk>/settings/", v.TrainingSettingsView.as_view(), name="api-study-settings"),
]
