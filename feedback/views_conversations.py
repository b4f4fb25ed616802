"""Live conversation pages: the participant writes a message, the study's models answer (streamed), the
participant judges, and the chosen answer continues the conversation (issue 12).

    GET  /s/<slug>/talk          the conversation so far and the next step (write, or judge the answers)
    POST /s/<slug>/talk          send a message without JavaScript: answers generated in full, then redirect
    POST /s/<slug>/talk/stream   send a message with JavaScript: answers streamed as server-sent events
    POST /s/<slug>/talk/judge    judge the pending turn (A/B choice, or 1-100 ratings of 3-4 answers)

The stream's events are `data: {json}` lines: {"type": "start", "answers": n}, {"type": "delta", "slot": i,
"text": "..."} as tokens arrive, then {"type": "done"} once the whole turn is stored, or {"type": "error",
"message": "..."} when a model failed (nothing stored; the page offers a retry). Streaming works under ASGI
(daphne: an async generator, one event loop) and WSGI (the same generator driven from the request thread).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from feedback import conversations as conv
from feedback import services
from feedback.llm_client import EndpointConfig, LLMError, StreamedChat, async_client
from feedback.models import Annotator, Candidate, Conversation, ModelEndpoint, RatingTask, Study
from feedback.services import ServiceError
from feedback.views_annotate import (
    DIMENSION_OPTIONS,
    MAX_TIME_MS,
    HttpRequest,
    _get_annotator,
    _join_redirect,
    _parse_int,
    _posted_dimensions_screen,
    _step_redirect,
    _step_url,
)

SLOT_LABELS = ("Response 1", "Response 2", "Response 3", "Response 4")


def _annotator_or_redirect(request: HttpRequest, slug: str) -> tuple[Annotator | None, HttpResponse | None]:
    annotator = _get_annotator(request, slug)
    if annotator is None:
        url = reverse("feedback:join", args=[slug])
        return None, (HttpResponseClientRedirect(url) if request.htmx else _join_redirect(slug))
    if response := _step_redirect(request, annotator, "compare"):
        return None, response
    if not annotator.study.is_conversation():
        return None, redirect("feedback:compare", slug=slug)
    return annotator, None


def _finished(request: HttpRequest, annotator: Annotator) -> HttpResponse:
    """No conversation left for the annotator: a paused study says so, otherwise they are done."""
    study = annotator.study
    finished_all = (conv.rating_progress(annotator)[0] >= study.pairs_per_annotator if study.is_ratings()
                    else conv.conversations_done(annotator))
    if study.status == Study.Status.PAUSED and not finished_all:
        return render(request, "feedback/annotate/paused.html", {"study": study})
    services.annotator_finish(annotator=annotator)
    url = _step_url(annotator, "done")
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _open_conversation(
    request: HttpRequest, slug: str, *, when_complete: Callable[[Annotator], HttpResponse] | None = None
) -> tuple[Annotator | None, Conversation | None, HttpResponse | None]:
    """The annotator and their open conversation, or the response that sends them elsewhere instead (the join
    page, their current step, or — no conversation left — `when_complete`, by default the finished page)."""
    annotator, response = _annotator_or_redirect(request, slug)
    if annotator is None:
        return None, None, response
    conversation = conv.conversation_open(annotator=annotator)
    if conversation is None:
        return annotator, None, (when_complete or (lambda a: _finished(request, a)))(annotator)
    return annotator, conversation, None


def _render_talk(request: HttpRequest, annotator: Annotator, conversation: Conversation, *, error: str = "",
                 message: str = "", status: int = 200) -> HttpResponse:
    study = annotator.study
    history = [
        (turn.prompt.text, turn.chosen.text if turn.chosen else "")
        for turn in conversation.turns.select_related("prompt", "chosen").filter(judged_at__isnull=False)
    ]
    pending = conv.pending_turn(conversation)
    index = pending.index if pending else conv.next_turn_index(conversation)
    answers = conv.turn_candidates(pending) if pending else []
    n_done = conversation.turns.filter(judged_at__isnull=False).count()
    context: dict[str, Any] = {
        "study": study,
        "conversation": conversation,
        "history": history,
        "pending": pending,
        "answers": [(SLOT_LABELS[i], c) for i, c in enumerate(answers)],
        "rating": len(answers) >= 3,
        "turn_index": index,
        "turns": study.conversation_turns,
        "percent": round(100 * n_done / study.conversation_turns) if study.conversation_turns else 100,
        "n_answers": conv.answers_for_turn(study, index),
        "seed_prompts": study.seed_prompts if index == 1 and not pending else [],
        "client_key": uuid.uuid4().hex,
        "error": error,
        "message": message,
        "dimension_options": DIMENSION_OPTIONS,
    }
    template = "feedback/annotate/talk.html"
    if request.htmx:
        template += "#talk"
    return render(request, template, context, status=status)


@require_http_methods(["GET", "POST"])
def talk(request: HttpRequest, slug: str) -> HttpResponse:
    annotator, conversation, response = _open_conversation(request, slug)
    if response is not None:
        return response
    assert annotator is not None and conversation is not None
    if request.method == "POST":
        # Without JavaScript: generate every answer in full (non-streaming requests), store, redirect.
        message = request.POST.get("message", "")
        try:
            text = conv.clean_message(message)
            if conv.pending_turn(conversation) is not None:
                raise ServiceError("Judge the answers you already have first.")
            endpoints = conv.turn_plan(conversation)
            messages = [*conv.conversation_messages(conversation), {"role": "user", "content": text}]
            answers = conv.generate_blocking(endpoints, messages)
            conv.turn_store(conversation=conversation, user_text=text, answers=answers,
                            client_key=request.POST.get("client_key", "")[:64] or uuid.uuid4().hex)
        except (ServiceError, LLMError) as exc:
            return _render_talk(request, annotator, conversation, error=_failure(exc), message=message, status=400)
        return redirect("feedback:talk", slug=slug)
    return _render_talk(request, annotator, conversation)


def _failure(exc: Exception) -> str:
    if isinstance(exc, LLMError):
        return f"A model could not answer: {exc} Nothing was saved; please try again."
    return str(exc)


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _generate_events(endpoints: list[ModelEndpoint], messages: list[dict[str, str]]) -> AsyncGenerator[Any, None]:
    """Stream every endpoint's answer at once; yields SSE strings, then the list of GeneratedAnswer last.

    Raises LLMError as soon as one answer fails (the others are cancelled).
    """
    configs = [EndpointConfig.from_endpoint(e) for e in endpoints]
    chats = [StreamedChat(c, messages) for c in configs]
    queue: asyncio.Queue[tuple[int, str | None, BaseException | None]] = asyncio.Queue()

    async def run(slot: int, client: Any) -> None:
        try:
            async for delta in chats[slot].deltas(client):
                await queue.put((slot, delta, None))
            await queue.put((slot, None, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            await queue.put((slot, None, exc))

    yield _sse({"type": "start", "answers": len(endpoints)})
    async with async_client() as client:
        tasks = [asyncio.create_task(run(i, client)) for i in range(len(chats))]
        try:
            finished = 0
            while finished < len(chats):
                slot, delta, error = await queue.get()
                if error is not None:
                    raise error if isinstance(error, LLMError) else LLMError("The model's answer failed.")
                if delta is None:
                    finished += 1
                    yield _sse({"type": "end", "slot": slot})
                else:
                    yield _sse({"type": "delta", "slot": slot, "text": delta})
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    yield [
        conv.GeneratedAnswer(endpoint, chat.result, config.sampling())  # type: ignore[arg-type]
        for endpoint, chat, config in zip(endpoints, chats, configs, strict=True)
    ]


def _store_event(conversation: Conversation, text: str, answers: list[conv.GeneratedAnswer], client_key: str) -> str:
    try:
        conv.turn_store(conversation=conversation, user_text=text, answers=answers, client_key=client_key)
    except ServiceError as exc:
        return _sse({"type": "error", "message": str(exc)})
    return _sse({"type": "done"})


async def _async_stream(conversation: Conversation, endpoints: list[ModelEndpoint], messages: list[dict[str, str]],
                        text: str, client_key: str) -> AsyncIterator[str]:
    try:
        async for item in _generate_events(endpoints, messages):
            if isinstance(item, list):
                yield await sync_to_async(_store_event)(conversation, text, item, client_key)
            else:
                yield item
    except LLMError as exc:
        yield _sse({"type": "error", "message": _failure(exc)})


def _sync_stream(conversation: Conversation, endpoints: list[ModelEndpoint], messages: list[dict[str, str]],
                 text: str, client_key: str) -> Iterator[str]:
    """The same stream for a WSGI request: the generator runs on an event loop in a helper thread (the
    request thread may not run a loop of its own), the store right here, on the request's DB connection."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="talk-stream", daemon=True)
    runner.start()
    events = _generate_events(endpoints, messages)
    try:
        while True:
            try:
                item = asyncio.run_coroutine_threadsafe(events.__anext__(), loop).result()
            except StopAsyncIteration:
                break
            except LLMError as exc:
                yield _sse({"type": "error", "message": _failure(exc)})
                break
            yield _store_event(conversation, text, item, client_key) if isinstance(item, list) else item
    finally:
        asyncio.run_coroutine_threadsafe(events.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()


@require_POST
def talk_stream(request: HttpRequest, slug: str) -> HttpResponse | StreamingHttpResponse:
    annotator, conversation, response = _open_conversation(
        request, slug, when_complete=lambda _: _event_error("This conversation is complete.", status=409)
    )
    if response is not None:
        return response
    assert annotator is not None and conversation is not None
    try:
        text = conv.clean_message(request.POST.get("message", ""))
        if conv.pending_turn(conversation) is not None:
            raise ServiceError("Judge the answers you already have first.", code="conflict")
        endpoints = conv.turn_plan(conversation)
    except ServiceError as exc:
        return _event_error(str(exc), status=409 if exc.code == "conflict" else 400)
    client_key = request.POST.get("client_key", "")[:64] or uuid.uuid4().hex
    messages = [*conv.conversation_messages(conversation), {"role": "user", "content": text}]
    args = (conversation, endpoints, messages, text, client_key)
    stream: Any = _async_stream(*args) if isinstance(request, ASGIRequest) else _sync_stream(*args)
    streaming = StreamingHttpResponse(stream, content_type="text/event-stream; charset=utf-8")
    streaming["Cache-Control"] = "no-cache"
    streaming["X-Accel-Buffering"] = "no"  # nginx: pass events through as they come
    return streaming


def _event_error(message: str, *, status: int) -> HttpResponse:
    return HttpResponse(_sse({"type": "error", "message": message}), status=status,
                        content_type="text/event-stream; charset=utf-8")


@require_POST
def talk_judge(request: HttpRequest, slug: str) -> HttpResponse:
    annotator, conversation, response = _open_conversation(request, slug)
    if response is not None:
        return response
    assert annotator is not None and conversation is not None
    turn = conv.pending_turn(conversation)
    post = request.POST
    client_key = post.get("client_key", "").strip()[:64]
    if client_key and conv.judged_with_key(annotator, client_key):
        # A retry of a judgment already stored (double click, network retry): show where they are now.
        return redirect("feedback:talk", slug=slug) if not request.htmx else _render_talk(request, annotator, conversation)
    if turn is None or str(turn.pk) != post.get("turn", ""):
        return _render_talk(request, annotator, conversation, error="Those answers were already judged.", status=400)
    if not client_key:
        return _render_talk(request, annotator, conversation, error="This form is out of date; please try again.",
                            status=400)
    try:
        time_ms = _parse_int(post.get("time_ms"))
    except ValueError:
        time_ms = None
    if time_ms is not None and not 0 <= time_ms <= MAX_TIME_MS:
        time_ms = None
    try:
        if len(turn.shown) >= 3:
            scores = [_parse_int(post.get(f"rating_{i}")) for i in range(len(turn.shown))]
            if any(s is None for s in scores):
                raise ServiceError("Rate every response (move each slider to your rating).")
            conv.turn_rate(turn=turn, annotator=annotator, scores=[int(s) for s in scores if s is not None],
                           client_key=client_key, time_ms=time_ms)
        else:
            conv.turn_choose(
                turn=turn, annotator=annotator, screen_choice=post.get("choice", ""), client_key=client_key,
                strength=_parse_int(post.get("strength")), rationale=post.get("rationale", "")[:5000],
                time_ms=time_ms, dimensions=_posted_dimensions_screen(post, annotator.study),
            )
    except ValueError:
        return _render_talk(request, annotator, conversation, error="A rating was not a number; please try again.",
                            status=400)
    except ServiceError as exc:
        return _render_talk(request, annotator, conversation, error=str(exc), status=400)
    annotator.refresh_from_db(fields=["completed_at"])
    if annotator.completed_at is not None:
        return _finished(request, annotator)
    if not request.htmx:
        return redirect("feedback:talk", slug=slug)
    conversation = conv.conversation_open(annotator=annotator)
    if conversation is None:
        return _finished(request, annotator)
    return _render_talk(request, annotator, conversation)



# --- "ratings" studies: rate every response of an imported prompt 1-100 ----------------------------------------


def _render_rate(request: HttpRequest, annotator: Annotator, task: RatingTask, *, error: str = "",
                 status: int = 200) -> HttpResponse:
    done, quota = conv.rating_progress(annotator)
    by_id = Candidate.objects.in_bulk(task.shown)
    answers = [by_id[pk] for pk in task.shown if pk in by_id]
    context = {
        "study": annotator.study, "task": task, "answers": [(f"Response {i + 1}", c) for i, c in enumerate(answers)],
        "done": done, "quota": quota, "position": min(done + 1, quota),
        "percent": round(100 * done / quota) if quota else 100, "client_key": uuid.uuid4().hex, "error": error,
    }
    template = "feedback/annotate/rate.html" + ("#rate" if request.htmx else "")
    return render(request, template, context, status=status)


@require_http_methods(["GET", "POST"])
def rate(request: HttpRequest, slug: str) -> HttpResponse:
    annotator = _get_annotator(request, slug)
    if annotator is None:
        url = reverse("feedback:join", args=[slug])
        return HttpResponseClientRedirect(url) if request.htmx else _join_redirect(slug)
    if response := _step_redirect(request, annotator, "compare"):
        return response
    if not annotator.study.is_ratings():
        return redirect(_step_url(annotator))
    if request.method == "POST":
        post = request.POST
        client_key = post.get("client_key", "").strip()[:64]
        task = RatingTask.objects.filter(annotator=annotator, pk=post.get("task") or 0).select_related("prompt").first()
        if not client_key or task is None:
            error = "This form is out of date; here are your current responses."
        elif conv.judged_with_key(annotator, client_key):
            error = ""  # a retried submission: carry on
        else:
            try:
                time_ms = _parse_int(post.get("time_ms"))
                scores = [_parse_int(post.get(f"rating_{i}")) for i in range(len(task.shown))]
                if any(s is None for s in scores):
                    raise ServiceError("Rate every response (move each slider to your rating).")
                conv.rating_task_submit(task=task, annotator=annotator, scores=[int(s) for s in scores if s is not None],
                                        client_key=client_key,
                                        time_ms=time_ms if time_ms is not None and 0 <= time_ms <= MAX_TIME_MS else None)
                error = ""
            except ValueError:
                error = "A rating was not a number; please try again."
            except ServiceError as exc:
                error = str(exc)
        if not error and not request.htmx:
            return redirect("feedback:rate", slug=slug)
        if error:
            current = conv.rating_task_next(annotator=annotator)
            if current is not None:
                return _render_rate(request, annotator, current, error=error, status=400)
    task = conv.rating_task_next(annotator=annotator)
    if task is None:
        return _finished(request, annotator)
    return _render_rate(request, annotator, task)
