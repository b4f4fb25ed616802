from django.urls import path

from feedback import consumers

websocket_urlpatterns = [
    path("ws/studies/<int:study_id>/", consumers.StudyConsumer.as_asgi()),
]
