from django.urls import path

from feedback import views_exports

urlpatterns = [
    path("studies/<int:pk>/export", views_exports.study_export, name="study_export"),
]
