from django.urls import path

from training import api_dashboard

# Included under /api/v1/ by config/urls.py.
urlpatterns = [
    path("studies/<int:pk>/dashboard/", api_dashboard.StudyDashboardView.as_view(), name="api-study-dashboard"),
    path(
        "studies/<int:pk>/annotators/<int:aid>/reward-model/",
        api_dashboard.AnnotatorRewardModelView.as_view(),
        name="api-annotator-reward-model",
    ),
    path("studies/<int:pk>/group-models/", api_dashboard.GroupModelView.as_view(), name="api-group-model"),
    path("studies/<int:pk>/model/", api_dashboard.StudyModelView.as_view(), name="api-study-model"),
]
