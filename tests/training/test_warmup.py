from __future__ import annotations

import threading

import pytest
from django.core.signals import request_started

from tests.training.conftest import label_all
from training import active_learning, selectors, services, warmup


@pytest.mark.django_db
def test_it_loads_the_encoder_the_active_model_and_its_pair_pool(style_study):
    label_all(style_study, n_annotators=4, per_annotator=10)
    version = services.model_version_request(study=style_study)
    version.refresh_from_db()
    assert version.status == "active", version.error
    style_study.selector = "mixed"
    style_study.save(update_fields=["selector"])
    selectors._load_cached.cache_clear()
    active_learning._pools.clear()

    result = warmup.warm()

    assert (result["models"], result["pools"]) == (1, 1)
    assert selectors._load_cached.cache_info().currsize == 1
    assert any(key[:2] == (style_study.pk, version.pk) for key in active_learning._pools)


@pytest.mark.django_db
def test_it_warms_nothing_but_the_encoder_without_a_model(style_study):
    assert warmup.warm()["models"] == 0


@pytest.mark.django_db
def test_it_starts_one_warm_up_thread_on_the_first_request_only(client, monkeypatch):
    calls: list[str] = []
    ran = threading.Event()

    def fake_run() -> None:
        calls.append(threading.current_thread().name)
        ran.set()

    monkeypatch.setattr(warmup, "_run", fake_run)
    monkeypatch.setattr(warmup, "_started", threading.Lock())
    request_started.connect(warmup.on_first_request, dispatch_uid=warmup.DISPATCH_UID)
    try:
        client.get("/accounts/login/")
        assert ran.wait(5)
        client.get("/accounts/login/")
        client.get("/accounts/login/")
    finally:
        request_started.disconnect(warmup.on_first_request, dispatch_uid=warmup.DISPATCH_UID)
    assert calls == ["chorus-warm-up"]
