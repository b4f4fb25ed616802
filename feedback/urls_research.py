from django.urls import path

from feedback import views_research

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
]
