import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("chorus")
# Every CELERY_* Django setting configures the app (broker, eager mode, routes).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
