import os

from celery import Celery

# A deployment entry point: without DJANGO_SETTINGS_MODULE it runs the production settings, which refuse to
# start without a real SECRET_KEY, DATABASE_URL and ALLOWED_HOSTS (never the public development key).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("chorus")
# Every CELERY_* Django setting configures the app (broker, eager mode, routes).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
