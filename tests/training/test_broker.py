"""A down broker: publishing fails fast, the circuit breaker skips the network, pages keep serving."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.training.conftest import label_all
from training import broker
from training.models import ModelVersion

DEAD_BROKER = "redis://127.0.0.1:1/15"  # nothing listens on port 1


@pytest.fixture
def dead_broker(settings):
    """This process publishes for real (not in-process) to a broker that refuses connections."""
    from config.celery import app

    old_url, old_eager = app.conf.broker_url, app.conf.task_always_eager
    app.conf.broker_url, app.conf.task_always_eager = DEAD_BROKER, False
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    broker.circuit.reset()
    yield
    app.conf.broker_url, app.conf.task_always_eager = old_url, old_eager
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    broker.circuit.reset()


def test_it_fails_fast_by_configuration(settings):
    from config.celery import app

    assert app.conf.task_publish_retry is False
    assert app.conf.broker_connection_timeout <= 2
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["socket_connect_timeout"] <= 2


def test_a_dead_broker_trips_the_circuit_and_later_publishes_skip_the_network(dead_broker):
    from training.tasks import update_annotator_posterior

    assert broker.publish(lambda: update_annotator_posterior.delay(1), what="probe") is False
    assert broker.broker_down() and "Error" in broker.circuit.last_error
    calls = []
    for _ in range(50):  # a burst of judgments during the outage
        assert broker.publish(lambda: calls.append(1), what="skipped") is False
    assert calls == []  # not one of them touched the broker


def test_the_circuit_closes_again_after_its_window(dead_broker, settings, monkeypatch):
    settings.CHORUS_BROKER_CIRCUIT_SECONDS = 5
    broker.circuit.trip(RuntimeError("down"))
    now = broker.time.monotonic()
    monkeypatch.setattr(broker.time, "monotonic", lambda: now + 6)
    calls = []
    assert broker.publish(lambda: calls.append(1), what="probe") is True and calls == [1]


def _researcher_client(researcher) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=researcher)[0].key}")
    return client


@pytest.mark.django_db
def test_retrain_during_an_outage_is_202_and_says_so(study, researcher, dead_broker):
    label_all(study, n_annotators=2, per_annotator=6)
    response = _researcher_client(researcher).post(f"/api/v1/studies/{study.pk}/retrain/", {"kind": "bt"},
                                                   format="json")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["broker_down"] is True and "broker" in body["detail"]
    version = ModelVersion.objects.get(pk=body["model_version_id"])
    assert version.enqueued_at is None  # the sweep will send it once the broker is back


@pytest.mark.django_db
def test_the_dashboard_serves_and_warns_when_redis_is_down(client, study, researcher, dead_broker, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(cache, "get", down)
    monkeypatch.setattr(cache, "set", down)
    broker.circuit.trip(ConnectionError("redis is down"))
    client.force_login(researcher)
    response = client.get(f"/studies/{study.pk}/dashboard/")
    assert response.status_code == 200
    assert "task broker is unreachable" in response.content.decode()
    api = _researcher_client(researcher).get(f"/api/v1/studies/{study.pk}/dashboard/")
    assert api.status_code == 200


def test_it_publishes_judgments_from_one_thread_of_its_own_and_warns_when_it_cannot(dead_broker, caplog):
    import threading

    threads: list[int] = []

    def send() -> None:
        threads.append(threading.get_ident())

    pending = [broker.publish_soon(send, what=f"message {i}") for i in range(3)]
    assert all(p is not None and p.result(timeout=10) is True for p in pending)
    assert len(set(threads)) == 1 and threads[0] != threading.get_ident()  # not the request's thread

    def refused() -> None:
        raise ConnectionError("refused")

    told: list[str] = []
    failed = broker.publish_soon(refused, what="judgment 7", on_failure=lambda: told.append("7"))
    broker.wait_published()
    assert failed is not None and failed.done() and failed.result() is False
    assert broker.broker_down() and told == ["7"]
    assert "could not enqueue judgment 7" in caplog.text


def test_it_publishes_at_once_in_process_mode(settings):
    from config.celery import app

    assert app.conf.task_always_eager  # the test settings' in-process mode
    calls: list[int] = []
    assert broker.publish_soon(lambda: calls.append(1), what="eager") is None
    assert calls == [1]
