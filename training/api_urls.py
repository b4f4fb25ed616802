"""Every /api/v1/ route of the training app (views in training.api_views and training.api_dashboard).

config/urls.py includes this once under api/v1/, next to feedback/api_urls.py; names carry an "api-" prefix
and no namespace, as there.
"""

from django.urls import path

from training import api_dashboard
from training import api_views as v

urlpatterns = [
    path("studies/<int:pk>/retrain/", v.RetrainView.as_view(), name="api-study-retrain"),
    path("studies/<int:pk>/models/", v.ModelVersionListView.as_view(), name="api-study-models"),
    path(
        "studies/<int:pk>/annotators/<int:aid>/predict/", v.PredictView.as_view(), name="api-annotator-predict"
    ),
    path("studies/<int:pk>/candidates/", v.CandidateListView.as_view(), name="api-study-candidates"),
    path("studies/<int:pk>/settings/", v.TrainingSettingsView.as_view(), name="api-study-settings"),
    # Dashboard numbers and model downloads (training.api_dashboard).
    path("studies/<int:pk>/dashboard/", api_dashboard.StudyDashboardView.as_view(), name="api-study-dashboard"),
    path(
        "studies/<int:pk>/annotators/<int:aid>/reward-model/",
        api_dashboard.AnnotatorRewardModelView.as_view(),
        name="api-annotator-reward-model",
    ),
    path("studies/<int:pk>/group-models/", api_dashboard.GroupModelView.as_view(), name="api-group-model"),
    path("studies/<int:pk>/model/", api_dashboard.StudyModelView.as_view(), name="api-study-model"),
]
