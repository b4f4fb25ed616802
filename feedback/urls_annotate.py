"""Annotator pages, under /s/<study-slug>/ (included at the site root with app_name "feedback")."""

from django.urls import path

from feedback import views_annotate

urlpatterns = [
    path("s/<slug:slug>/join", views_annotate.join, name="join"),
    path("s/<slug:slug>/resume/<str:token>", views_annotate.resume, name="resume"),
    path("s/<slug:slug>/consent", views_annotate.consent, name="consent"),
    path("s/<slug:slug>/profile", views_annotate.profile, name="profile"),
    path("s/<slug:slug>/compare", views_annotate.compare, name="compare"),
    path("s/<slug:slug>/done", views_annotate.done, name="done"),
]
