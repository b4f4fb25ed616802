from django.urls import path

from training import views

app_name = "training"
# Included at the site root by config/urls.py.
urlpatterns = [
    path("studies/<int:pk>/dashboard/", views.dashboard, name="dashboard"),
    path("studies/<int:pk>/train", views.train_now, name="train_now"),
    path("studies/<int:pk>/train/status", views.train_status, name="train_status"),
    path("s/<slug:slug>/my-model", views.my_model, name="my_model"),
    path("s/<slug:slug>/my-model/download", views.my_model_download, name="my_model_download"),
]
