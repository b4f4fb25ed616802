"""feedback/consumers.py: who may open /ws/studies/<id>/ and which events they hear.

The consumer asks the HTTP side's two rules (selectors.own_annotator, selectors.get_study_for_researcher);
these tests drive it with Channels' WebsocketCommunicator for every kind of caller.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import connections

from config.routing import websocket_urlpatterns
from feedback.consumers import REFUSED
from feedback.realtime import annotator_group, study_group
from tests.factories import AnnotatorFactory, ResearcherFactory

# The consumer reads the database in a worker thread (database_sync_to_async), outside the test's
# transaction: the rows it must see have to be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _in_memory_layer(settings):
    # Not the shared Redis: group names (study-<pk>) would meet other test databases' events there.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def _run(coro):
    # A fresh loop in its own thread, as in test_asgi: the browser tests' Playwright may hold the main one.
    async def and_close():
        try:
            return await coro
        finally:
            # database_sync_to_async ran in asgiref's one shared thread: close its connection there, or it
            # keeps the test database open past the session (which then cannot be dropped).
            await sync_to_async(connections.close_all)()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, and_close()).result()


async def _session(user, study_id: int, *, send_to: str | None = None) -> tuple[bool, int | None, dict | None]:
    """Connect as `user`; when accepted and `send_to` is given, push one event to that group.

    Returns (accepted, close code, the event received or None).
    """
    from channels.layers import get_channel_layer

    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/studies/{study_id}/")
    communicator.scope["user"] = user
    accepted, code = await communicator.connect()
    if not accepted:
        return False, code, None
    received = None
    if send_to is not None:
        await get_channel_layer().group_send(
            send_to, {"type": "chorus.event", "event": "judgment", "payload": {"n": 1}}
        )
        received = None if await communicator.receive_nothing(timeout=0.3) else await communicator.receive_json_from()
    await communicator.disconnect()
    return True, None, received


def test_it_refuses_anonymous_visitors(study):
    assert _run(_session(AnonymousUser(), study.pk)) == (False, REFUSED, None)


def test_it_gives_an_annotator_of_the_study_their_own_events_only(study):
    annotator = AnnotatorFactory(study=study)
    own = _run(_session(annotator.user, study.pk, send_to=annotator_group(annotator.pk)))
    assert own == (True, None, {"event": "judgment", "n": 1})
    # Not the researchers' study-wide stream, nor another annotator's.
    assert _run(_session(annotator.user, study.pk, send_to=study_group(study.pk))) == (True, None, None)
    other = AnnotatorFactory(study=study)
    assert _run(_session(annotator.user, study.pk, send_to=annotator_group(other.pk))) == (True, None, None)


def test_it_refuses_an_annotator_of_another_study(study, other_annotator):
    assert _run(_session(other_annotator.user, study.pk)) == (False, REFUSED, None)


def test_it_gives_a_researcher_of_the_study_the_study_wide_events(study, researcher):
    got = _run(_session(researcher, study.pk, send_to=study_group(study.pk)))
    assert got == (True, None, {"event": "judgment", "n": 1})
    co = ResearcherFactory(is_superuser=True)
    assert _run(_session(co, study.pk, send_to=study_group(study.pk)))[2] == {"event": "judgment", "n": 1}


def test_it_refuses_another_researcher_and_a_missing_study(study, researcher):
    assert _run(_session(ResearcherFactory(), study.pk)) == (False, REFUSED, None)
    assert _run(_session(researcher, 999_999)) == (False, REFUSED, None)


def test_it_never_gives_an_annotator_account_the_study_stream(study):
    # The selector's rule: annotator accounts are never researchers, even when listed as one.
    annotator = AnnotatorFactory(study=study)
    study.researchers.add(annotator.user)
    assert _run(_session(annotator.user, study.pk, send_to=study_group(study.pk))) == (True, None, None)


def test_it_authenticates_through_the_real_asgi_stack(client, study, researcher):
    # config.asgi: origin check, then the session cookie (AuthMiddlewareStack), then the route.
    from config.asgi import application

    client.force_login(researcher)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    async def go(headers):
        communicator = WebsocketCommunicator(application, f"/ws/studies/{study.pk}/", headers=headers)
        accepted, code = await communicator.connect()
        if accepted:
            await communicator.disconnect()
        return accepted, code

    origin = (b"origin", b"http://testserver")
    assert _run(go([origin, (b"host", b"testserver"), (b"cookie", cookie)]))[0] is True
    assert _run(go([origin, (b"host", b"testserver")])) == (False, REFUSED)
