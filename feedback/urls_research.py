from django.urls import path

from feedback import views_endpoints, views_research

# Included at the site root by feedback/urls.py (app_name "feedback").
urlpatterns = [
    path("studies/", views_research.study_list, name="study_list"),
    path("studies/new", views_research.study_create, name="study_create"),
    path("studies/<int:pk>/", views_research.study_detail, name="study_detail"),
    path("studies/<int:pk>/status", views_research.study_status, name="study_status"),
    path("studies/<int:pk>/import", views_research.study_import, name="study_import"),
    path("studies/<int:pk>/settings", views_research.study_settings, name="study_settings"),
    path(
        "studies/<int:pk>/annotators/<int:annotator_id>/exclusion",
        views_research.annotator_exclusion,
        name="annotator_exclusion",
    ),
    # Model endpoints, live conversations and judgment design (issue 12).
    path("studies/<int:pk>/models", views_endpoints.study_models, name="study_models"),
    path("studies/<int:pk>/models/<int:endpoint_id>/test", views_endpoints.endpoint_test, name="endpoint_test"),
    path("studies/<int:pk>/models/<int:endpoint_id>/active", views_endpoints.endpoint_active, name="endpoint_active"),
    path("studies/<int:pk>/design", views_endpoints.study_design, name="study_design"),
    path("studies/<int:pk>/attention-checks", views_endpoints.attention_checks, name="attention_checks"),
]
