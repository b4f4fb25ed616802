"""Annotator pages, under /s/<study-slug>/ (included at the site root with app_name "feedback")."""

from django.urls import path

from feedback import views_annotate, views_conversations

urlpatterns = [
    path("s/<slug:slug>/join", views_annotate.join, name="join"),
    path("s/<slug:slug>/resume/<str:token>", views_annotate.resume, name="resume"),
    path("s/<slug:slug>/consent", views_annotate.consent, name="consent"),
    path("s/<slug:slug>/profile", views_annotate.profile, name="profile"),
    path("s/<slug:slug>/compare", views_annotate.compare, name="compare"),
    path("s/<slug:slug>/done", views_annotate.done, name="done"),
    path("s/<slug:slug>/talk", views_conversations.talk, name="talk"),
    path("s/<slug:slug>/talk/stream", views_conversations.talk_stream, name="talk_stream"),
    path("s/<slug:slug>/talk/judge", views_conversations.talk_judge, name="talk_judge"),
    path("s/<slug:slug>/rate", views_conversations.rate, name="rate"),
]
