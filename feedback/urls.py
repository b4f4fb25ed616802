from django.urls import include, path

app_name = "feedback"
# Annotator pages live under /s/<slug>/…, researcher pages under /studies/….
urlpatterns = [
    path("", include("feedback.urls_annotate")),
    path("", include("feedback.urls_research")),
    path("", include("feedback.urls_exports")),
]
