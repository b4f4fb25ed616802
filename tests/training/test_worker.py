"""Against a REAL Celery worker process on Redis: processing, kill -9 mid-training, broker outage, replays.

The worker runs `celery -A config worker -Q default,gpu --pool=solo -c 1` with config.settings.test plus env
overrides (see the end of config/settings/test.py): CHORUS_TEST_EAGER=0 (use the broker), TEST_DATABASE_URL
= this test's own database, a 10 s visibility timeout, a 5 s stale-heartbeat limit and 2 training epochs.
This process stops running tasks eagerly for the duration of each test and publishes to the same Redis.

Run them alone with `pytest -m worker`; each takes 20–60 s. Skipped when Redis is not reachable.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.db import connection

from feedback import services as feedback_services
from feedback.models import Judgment
from tests.training.conftest import label_all
from training import selectors, services
from training.models import AnnotatorPosterior, ModelVersion

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
DEAD_BROKER = "redis://127.0.0.1:1/15"  # nothing listens on port 1
# Parallel pytest runs (other checkouts) share Redis db 15: this run's broker keys carry its own prefix.
BROKER_PREFIX = f"chorus-test-{os.getpid()}:"
WORKER_ENV = {
    "CHORUS_TEST_BROKER_PREFIX": BROKER_PREFIX,
    "CHORUS_TEST_EAGER": "0",
    "CELERY_VISIBILITY_TIMEOUT": "10",
    "CHORUS_TRAINING_STALE_SECONDS": "5",
    "CHORUS_FIT_EPOCHS": "2",
    "LOG_LEVEL": "INFO",
}


def _redis():
    import redis

    return redis.Redis.from_url(django_settings.REDIS_URL, socket_connect_timeout=1)


@pytest.fixture(autouse=True)
def run_on_commit_immediately():
    """Overrides the package-wide fixture: here transactions really commit, so on_commit runs after COMMIT
    (as in production) — a task must never reach the worker before the row it is about."""
    yield


@pytest.fixture(autouse=True)
def redis_up():
    try:
        _redis().ping()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"Redis is not reachable at {django_settings.REDIS_URL} ({exc}); worker tests need it")


def _purge_broker() -> None:
    """Drop messages left by an earlier (aborted) run: their ids would point into this test's database."""
    r = _redis()
    for pattern in ("default", "default\x06\x16*", "gpu", "gpu\x06\x16*", "unacked*", "_kombu.*"):
        keys = list(r.scan_iter(match=BROKER_PREFIX + pattern))
        if keys:
            r.delete(*keys)


def _broker_drained() -> bool:
    r = _redis()
    p = BROKER_PREFIX
    return r.llen(p + "default") == 0 and r.llen(p + "gpu") == 0 and r.hlen(p + "unacked") == 0


def _use_broker(url: str) -> None:
    """Point this process's Celery app at another broker (drops its cached connections)."""
    from config.celery import app

    app.conf.broker_url = url
    # Drop references only: kombu keeps one pool per broker URL process-wide, so a pool closed here would
    # come back closed the next time that URL is used.
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None


def wait_for(predicate, *, timeout: float, what: str, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _database_url() -> str:
    """The database pytest-django created for this run (test_…), as a URL for the worker."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Worker:
    def __init__(self, log_path: Path, extra_env: dict[str, str], *, beat: bool = False, slow_fit: bool = False):
        env = {**os.environ, **WORKER_ENV, **extra_env}
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings.test",
            TEST_DATABASE_URL=_database_url(),
            TEST_REDIS_URL=django_settings.REDIS_URL,
        )
        self.log_path = log_path
        self.log = log_path.open("wb")
        # A slow-fit worker runs the app of tests/training/slow_worker.py: every fit sleeps first, so the test
        # can kill it mid-training (the services have no switch for it).
        app = "tests.training.slow_worker" if slow_fit else "config"
        cmd = [
            sys.executable, "-m", "celery", "-A", app, "worker", "-Q", "default,gpu", "--pool=solo", "-c", "1",
            "-n", f"test-{uuid.uuid4().hex[:8]}@%h", "--loglevel=INFO", "--without-gossip", "--without-mingle",
        ]
        if beat:  # a separate `celery beat` process (the sweep's scheduler), as in a deployment
            cmd = [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=INFO",
                   "-s", str(log_path.with_suffix(".schedule"))]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 45) -> Worker:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            out = self.output()
            return " ready." in out or "beat: Starting..." in out

        wait_for(ready, timeout=timeout, what="the worker to start")
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # warm shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture
def trained_study(style_study, settings):
    """style_study labelled by 4 annotators, with an active "bt" model trained in this process (eager)."""
    settings.CHORUS_FIT_EPOCHS = 2
    annotators = label_all(style_study, n_annotators=4, per_annotator=8)
    version = services.model_version_request(study=style_study, kind="bt")
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.ACTIVE, version.error
    return style_study, annotators, version


@pytest.fixture
def start_worker(trained_study, tmp_path):
    """Switches this process to the real broker and returns a function that starts workers."""
    from config.celery import app

    _purge_broker()
    app.conf.task_always_eager = False
    transport_options = app.conf.broker_transport_options
    app.conf.broker_transport_options = {**transport_options, "global_keyprefix": BROKER_PREFIX}
    _use_broker(django_settings.CELERY_BROKER_URL)
    workers: list[Worker] = []

    def start(beat: bool = False, slow_fit: bool = False, **extra_env: str) -> Worker:
        worker = Worker(tmp_path / f"worker-{len(workers)}.log", {k: str(v) for k, v in extra_env.items()}, beat=beat,
                        slow_fit=slow_fit)
        workers.append(worker)
        return worker.wait_ready()

    yield start
    for worker in workers:
        worker.stop()
    app.conf.task_always_eager = True
    app.conf.broker_transport_options = transport_options
    _use_broker(django_settings.CELERY_BROKER_URL)
    _purge_broker()


def _judge(annotator, key: str) -> Judgment:
    assignment = feedback_services.assignment_next(annotator=annotator)
    assert assignment is not None, "the annotator has nothing left to judge"
    judgment, created = feedback_services.judgment_create(
        annotator=annotator, pair=assignment.pair, choice="a", client_key=key
    )
    assert created
    return judgment


def _state(annotator, version) -> AnnotatorPosterior:
    return AnnotatorPosterior.objects.get(annotator=annotator, model_version=version)


def test_the_worker_folds_a_new_judgment_into_the_posterior(trained_study, start_worker):
    study, annotators, version = trained_study
    ann = annotators[1]
    before = _state(ann, version)
    start_worker()
    judgment = _judge(ann, "w1")
    after = wait_for(
        lambda: (s := _state(ann, version)).last_judgment_id == judgment.pk and s,
        timeout=30, what="the worker to update the posterior",
    )
    assert after.n_predicted == before.n_predicted + 1
    assert after.state != before.state


def test_a_training_job_survives_kill_9_of_its_worker(trained_study, start_worker):
    study, annotators, first = trained_study
    n_judgments = Judgment.objects.filter(pair__study=study).count()
    slow = start_worker(slow_fit=True)
    second = services.model_version_request(study=study, kind="bt")
    assert second.pk != first.pk
    wait_for(lambda: ModelVersion.objects.get(pk=second.pk).status == "training", timeout=30,
             what="the worker to claim the training job")
    slow.kill9()  # mid-fit: the message was never acknowledged
    assert "every fit sleeps" in slow.output()  # the slow-fit app was the one that ran

    def only_first_active():
        active = list(ModelVersion.objects.filter(study=study, status="active").values_list("pk", flat=True))
        assert active == [first.pk], active
        return True

    only_first_active()
    # a judgment arrives while no worker is alive: it waits in the queue
    late = _judge(annotators[2], "while-dead")
    fresh = start_worker()  # no slow fit: finishes the job once Redis hands the message back

    def finished():
        version = ModelVersion.objects.get(pk=second.pk)
        if version.status in ("queued", "training"):
            only_first_active()  # the old model keeps serving until the new one is evaluated
            return None
        return version

    done = wait_for(finished, timeout=45, what="the redelivered training job to finish")
    assert done.status in ("active", "ready"), (done.status, done.error, fresh.output()[-3000:])
    assert done.attempts == 2  # claimed by the killed worker, then re-claimed after its heartbeat went stale
    first.refresh_from_db()
    assert first.status == ("retired" if done.status == "active" else "active")
    assert ModelVersion.objects.filter(study=study, status="active").count() == 1
    # no judgment lost: all of them are there, and the new version trained/evaluated on every one of its cutoff
    assert Judgment.objects.filter(pair__study=study).count() == n_judgments + 1
    in_cutoff = Judgment.objects.filter(pair__study=study, id__lte=done.data_cutoff).exclude(choice="tie").count()
    assert done.n_train + done.n_heldout == in_cutoff == n_judgments
    # and the judgment made while the worker was dead reached the annotator's posterior
    active = selectors.active_version(study.pk)
    wait_for(lambda: AnnotatorPosterior.objects.filter(annotator=annotators[2], model_version=active,
                                                       last_judgment_id__gte=late.pk).exists(),
             timeout=30, what="the queued judgment to be folded in")


def test_judgments_save_during_a_broker_outage_and_catch_up_later(trained_study, start_worker, caplog, settings):
    from training import broker

    study, annotators, version = trained_study
    settings.CHORUS_BROKER_CIRCUIT_SECONDS = 1
    broker.circuit.reset()
    ann = annotators[3]
    before = _state(ann, version)
    start_worker()
    _use_broker(DEAD_BROKER)
    caplog.set_level(logging.WARNING, logger="training.hooks")
    caplog.set_level(logging.INFO, logger="training.broker")
    started = time.monotonic()
    lost = [_judge(ann, f"outage-{i}") for i in range(2)]
    broker.wait_published()  # the hook hands the publish to the process's publishing thread
    outage_seconds = time.monotonic() - started
    assert Judgment.objects.filter(pk__in=[j.pk for j in lost]).count() == 2  # saved regardless
    assert sum("could not enqueue training" in r.getMessage() for r in caplog.records) == 2
    assert outage_seconds < 30, f"a judgment blocked {outage_seconds / 2:.1f}s on the dead broker"
    time.sleep(1)
    assert _state(ann, version).last_judgment_id == before.last_judgment_id  # nobody heard of them
    # the first failure tripped the circuit: the second judgment cost no connect attempt at all
    assert any("broker circuit open" in r.getMessage() for r in caplog.records)
    _use_broker(django_settings.CELERY_BROKER_URL)  # the broker is back
    time.sleep(1.1)  # past the circuit's window: the next publish probes the broker again
    later = _judge(ann, "after-outage")
    after = wait_for(lambda: (s := _state(ann, version)).last_judgment_id == later.pk and s, timeout=30,
                     what="the catch-up update")
    assert after.n_predicted == before.n_predicted + 3  # both missed judgments and the new one


def test_replayed_tasks_are_idempotent(trained_study, start_worker):
    from training.tasks import retrain_study_model, update_annotator_posterior

    study, annotators, version = trained_study
    ann = annotators[0]
    start_worker()
    judgment = _judge(ann, "replay")  # the hook sends one update ...
    update_annotator_posterior.delay(ann.pk)  # ... and the same task is sent again
    update_annotator_posterior.delay(ann.pk)
    first_state = wait_for(lambda: (s := _state(ann, version)).last_judgment_id == judgment.pk and s,
                           timeout=30, what="the update")
    wait_for(_broker_drained, timeout=30, what="the worker to run every copy")
    again = _state(ann, version)
    assert (again.n_predicted, again.n_correct, again.state) == (
        first_state.n_predicted, first_state.n_correct, first_state.state
    )
    # a replayed retrain of a finished version changes nothing and trains nothing
    finished_at = version.finished_at
    retrain_study_model.delay(version.pk)
    retrain_study_model.delay(version.pk)
    wait_for(_broker_drained, timeout=30, what="the replayed retrain tasks")
    version.refresh_from_db()
    assert (version.status, version.finished_at, version.attempts) == ("active", finished_at, 1)
    assert ModelVersion.objects.filter(study=study).count() == 1


SWEEP_ENV = {"CHORUS_SWEEP_SECONDS": "1", "CHORUS_TRAINING_REQUEUE_SECONDS": "2", "CHORUS_POSTERIOR_LAG_SECONDS": "0"}


def test_the_sweep_takes_over_a_killed_workers_job_long_before_the_visibility_timeout(trained_study, start_worker):
    """Redis would hand the killed worker's message back only after its visibility timeout (an hour here, the
    production default); the beat-driven sweep sees the stale heartbeat and hands the job to a new worker."""
    study, _, first = trained_study
    hour = {"CELERY_VISIBILITY_TIMEOUT": "3600"}
    slow = start_worker(slow_fit=True, **hour)
    second = services.model_version_request(study=study, kind="bt")
    wait_for(lambda: ModelVersion.objects.get(pk=second.pk).status == "training", timeout=30,
             what="the worker to claim the training job")
    slow.kill9()
    killed_at = time.monotonic()
    start_worker(**hour)
    start_worker(beat=True, **hour, **SWEEP_ENV)
    stale = int(WORKER_ENV["CHORUS_TRAINING_STALE_SECONDS"])
    done = wait_for(lambda: (v := ModelVersion.objects.get(pk=second.pk)).status not in ("queued", "training") and v,
                    timeout=stale + 40, what="the sweep to hand the job to the new worker")
    took = time.monotonic() - killed_at
    assert done.status in ("active", "ready"), (done.status, done.error)
    assert done.attempts == 2
    # stale limit + one sweep, plus starting two processes and a 2-epoch fit on a shared CPU: far below 3600 s
    assert took < stale + 40, took
    assert ModelVersion.objects.filter(study=study, status="active").count() == 1


def test_a_retrain_requested_while_the_broker_is_down_is_sent_by_the_sweep(trained_study, start_worker, settings):
    """Fault suite: acknowledged judgments = stored, none duplicated, posteriors caught up, retraining unstuck."""
    from training import broker

    study, annotators, first = trained_study
    settings.CHORUS_BROKER_CIRCUIT_SECONDS = 1
    broker.circuit.reset()
    start_worker()
    _use_broker(DEAD_BROKER)
    acknowledged = [_judge(annotators[i % 4], f"fault-{i}").pk for i in range(6)]  # bounded load in the outage
    stuck = services.model_version_request(study=study, kind="bt")  # committed queued, its message lost
    stuck.refresh_from_db()
    assert (stuck.status, stuck.enqueued_at) == ("queued", None)
    # The automatic rule would skip this study now; the request is idempotent and returns the same row.
    assert services.model_version_request(study=study, kind="bt").pk == stuck.pk
    _use_broker(django_settings.CELERY_BROKER_URL)  # the broker is back
    start_worker(beat=True, **SWEEP_ENV)
    done = wait_for(lambda: (v := ModelVersion.objects.get(pk=stuck.pk)).status not in ("queued", "training") and v,
                    timeout=60, what="the sweep to send the lost retrain")
    assert done.status in ("active", "ready"), done.error
    stored = Judgment.objects.filter(pk__in=acknowledged)
    assert stored.count() == len(acknowledged)  # acknowledged = stored
    assert Judgment.objects.filter(pair__study=study).values("annotator", "pair").distinct().count() == \
        Judgment.objects.filter(pair__study=study).count()  # none duplicated
    active = selectors.active_version(study.pk)

    def caught_up():
        for ann in annotators:
            newest = Judgment.objects.filter(annotator=ann).exclude(choice="tie").order_by("-id").first()
            if not AnnotatorPosterior.objects.filter(annotator=ann, model_version=active,
                                                     last_judgment_id__gte=newest.pk).exists():
                return False
        return True

    wait_for(caught_up, timeout=90, what="every annotator's posterior to catch up")
