"""Services of live conversations, model endpoints and N-way 1-100 ratings (issue 12).

Every generated answer is stored as a Candidate of a Prompt (the conversation so far plus the
participant's new message), and every comparison as a Pair with an Assignment and a Judgment, exactly
like imported data: exports, dashboards and reward models need nothing special for on-policy data.

Nothing half-written is stored: a turn's prompt, answers, pair and assignment are written in one
transaction only after every model has answered in full (`turn_store`); a failed or timed-out answer
stores nothing and the participant retries.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, F
from django.utils import timezone

from feedback import services
from feedback.llm_client import ChatResult, EndpointConfig, LLMError, chat
from feedback.models import (
    Annotator,
    Assignment,
    Candidate,
    Conversation,
    ConversationTurn,
    Judgment,
    ModelEndpoint,
    Pair,
    Prompt,
    Rating,
    RatingTask,
    Study,
    text_hash,
)
from feedback.services import ServiceError

MAX_MESSAGE_CHARS = 4000
MAX_ANSWERS = 4
# Model families an answer may name; naming one (or the endpoint's own name / model id) flags the answer,
# since it tells the participant which model they are judging.
MODEL_FAMILY_NAMES = (
    "chatgpt", "gpt-3.5", "gpt-4", "gpt-4o", "openai", "claude", "anthropic", "llama", "gemini", "bard",
    "mistral", "mixtral", "qwen", "deepseek", "phi-3", "command-r", "cohere",
)
ENDPOINT_PARAMS = {
    # name: (type, low, high) — what a researcher may set on an endpoint's sampling parameters.
    "temperature": (float, 0.0, 2.0),
    "top_p": (float, 0.0, 1.0),
    "max_tokens": (int, 1, 32_768),
    "seed": (int, 0, 2**31 - 1),
    "presence_penalty": (float, -2.0, 2.0),
    "frequency_penalty": (float, -2.0, 2.0),
}


# --------------------------------------------------------------------------------------------------------
# Model endpoints
# --------------------------------------------------------------------------------------------------------


def clean_endpoint_params(params: Any) -> dict[str, Any]:
    if params in (None, ""):
        return {}
    if not isinstance(params, dict):
        raise ServiceError('sampling parameters must be a JSON object, e.g. {"temperature": 0.7}')
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name not in ENDPOINT_PARAMS:
            raise ServiceError(f"unknown sampling parameter {name!r}; use {sorted(ENDPOINT_PARAMS)}")
        kind, low, high = ENDPOINT_PARAMS[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
            raise ServiceError(f"{name} must be a{'n integer' if kind is int else ' number'}")
        if not low <= value <= high:
            raise ServiceError(f"{name} must be between {low} and {high}")
        out[name] = kind(value)
    return out


@transaction.atomic
def endpoint_create(
    *, study: Study, name: str, base_url: str, model_id: str, params: Any = None, api_key: str = "",
    system_prompt: str = "",
) -> ModelEndpoint:
    name, base_url, model_id = name.strip(), base_url.strip(), model_id.strip()
    if not name or not model_id:
        raise ServiceError("an endpoint needs a name and a model id")
    if not base_url.startswith(("http://", "https://")):
        raise ServiceError("the base URL must start with http:// or https://")
    if ModelEndpoint.objects.filter(study=study, name=name).exists():
        raise ServiceError(f"this study already has an endpoint named {name!r}", code="conflict")
    return ModelEndpoint.objects.create(
        study=study, name=name, base_url=base_url, model_id=model_id, params=clean_endpoint_params(params),
        api_key=api_key.strip(), system_prompt=system_prompt.strip(),
    )


def endpoint_set_active(*, endpoint: ModelEndpoint, active: bool) -> ModelEndpoint:
    if endpoint.is_active != active:
        endpoint.is_active = active
        endpoint.save(update_fields=["is_active"])
    return endpoint


@dataclass
class ConnectionCheck:
    ok: bool
    message: str
    latency_ms: int | None = None
    sample: str = ""


def endpoint_test(*, endpoint: ModelEndpoint) -> ConnectionCheck:
    """Send one short non-streaming request; the result says in words what worked or what failed."""
    config = EndpointConfig.from_endpoint(endpoint)
    config.params = {**config.params, "max_tokens": min(int(config.params.get("max_tokens", 16)), 16)}
    try:
        result = chat(config, [{"role": "user", "content": "Say hello in one short sentence."}])
    except LLMError as exc:
        return ConnectionCheck(False, str(exc))
    if not result.text.strip():
        return ConnectionCheck(False, "The server answered, but with an empty message.", result.latency_ms)
    return ConnectionCheck(True, f"Connected: {result.model or endpoint.model_id} answered in {result.latency_ms} ms.",
                           result.latency_ms, result.text[:200])


def names_model(text: str, endpoint: ModelEndpoint) -> bool:
    """Whether an answer names a model (its own endpoint name / model id, or a well-known model family)."""
    lowered = text.lower()
    names = {endpoint.name.lower(), endpoint.model_id.lower(), endpoint.model_id.rsplit("/", 1)[-1].lower()}
    names |= set(MODEL_FAMILY_NAMES)
    for name in names:
        if len(name) >= 3 and re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", lowered):
            return True
    return False


# --------------------------------------------------------------------------------------------------------
# N-way 1-100 ratings -> pairs
# --------------------------------------------------------------------------------------------------------


def _pair_for(study: Study, prompt: Prompt, x: Candidate, y: Candidate) -> Pair:
    a, b = (x, y) if x.pk < y.pk else (y, x)
    pair, _ = Pair.objects.get_or_create(study=study, prompt=prompt, candidate_a=a, candidate_b=b)
    return pair


def ratings_record(
    *, annotator: Annotator, prompt: Prompt, shown: list[Candidate], scores: list[int], client_key: str,
    time_ms: int | None = None,
) -> list[Judgment]:
    """Store 1-100 ratings of N >= 3 answers (in the order shown) and derive one judgment per pair.

    For every two answers with different scores the higher-rated one is chosen, with strength = the score
    difference (1-99); equal scores are skipped (a tie carries no training signal and is recoverable from
    the ratings). Derived judgments have source="rating" and are otherwise ordinary judgments. Must run
    inside the caller's transaction (turn_rate provides it).
    """
    if len(shown) < 3 or len(shown) != len(scores):
        raise ServiceError("rate each of the answers (at least three)")
    for score in scores:
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 100:
            raise ServiceError("every rating must be a whole number from 1 to 100")
    study = annotator.study
    for position, (candidate, score) in enumerate(zip(shown, scores, strict=True), start=1):
        Rating.objects.create(annotator=annotator, prompt=prompt, candidate=candidate, score=score,
                              position=position, client_key=client_key)
    now = timezone.now()
    judgments = []
    order = {c.pk: i for i, c in enumerate(shown)}
    for (x, sx), (y, sy) in itertools.combinations(zip(shown, scores, strict=True), 2):
        if sx == sy:
            continue
        pair = _pair_for(study, prompt, x, y)
        a_first = order[pair.candidate_a_id] < order[pair.candidate_b_id]
        shown_order = Assignment.Order.AB if a_first else Assignment.Order.BA
        assignment = Assignment.objects.create(
            annotator=annotator, pair=pair, shown_order=shown_order, selector="rating", completed_at=now
        )
        score_a, score_b = (sx, sy) if pair.candidate_a_id == x.pk else (sy, sx)
        judgments.append(Judgment.objects.create(
            annotator=annotator, pair=pair, assignment=assignment,
            choice=Judgment.Choice.A if score_a > score_b else Judgment.Choice.B,
            shown_order=shown_order, strength=abs(sx - sy), time_ms=time_ms,
            client_key=f"{client_key[:40]}:r{pair.pk}", source=Judgment.Source.RATING,
        ))
        Pair.objects.filter(id=pair.pk).update(n_assigned=F("n_assigned") + 1, n_judgments=F("n_judgments") + 1)
    for judgment in judgments:
        for hook in services.judgment_created_hooks:
            transaction.on_commit(functools.partial(hook, judgment))
    return judgments


# --------------------------------------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------------------------------------


def conversation_open(*, annotator: Annotator) -> Conversation | None:
    """The annotator's unfinished conversation, a new one if they have conversations left, else None."""
    study = annotator.study
    current = Conversation.objects.filter(annotator=annotator, completed_at__isnull=True).order_by("id").first()
    if current is not None:
        return current
    if not study.is_open():
        return None
    if Conversation.objects.filter(annotator=annotator).count() >= study.conversations_per_annotator:
        return None
    return Conversation.objects.create(study=study, annotator=annotator)


def conversations_done(annotator: Annotator) -> bool:
    done = Conversation.objects.filter(annotator=annotator, completed_at__isnull=False).count()
    return done >= annotator.study.conversations_per_annotator


def conversation_messages(conversation: Conversation) -> list[dict[str, str]]:
    """The conversation so far: each judged turn's user message and the answer that continued it."""
    messages: list[dict[str, str]] = []
    for turn in conversation.turns.select_related("prompt", "chosen").order_by("index"):
        if turn.chosen is None:
            break
        messages += [{"role": "user", "content": turn.prompt.text}, {"role": "assistant", "content": turn.chosen.text}]
    return messages


def pending_turn(conversation: Conversation) -> ConversationTurn | None:
    """The last turn when it still waits for the participant's judgment."""
    return conversation.turns.filter(judged_at__isnull=True).select_related("prompt").order_by("-index").first()


def next_turn_index(conversation: Conversation) -> int:
    return conversation.turns.count() + 1


def answers_for_turn(study: Study, index: int) -> int:
    wanted = study.first_turn_answers if index == 1 else 2
    return max(2, min(MAX_ANSWERS, wanted))


def turn_plan(conversation: Conversation, *, rng: random.Random | None = None) -> list[ModelEndpoint]:
    """Which endpoints answer the next turn, in the order shown (random, distinct while there are enough)."""
    rng = rng or random.Random()
    study = conversation.study
    endpoints = list(ModelEndpoint.objects.filter(study=study, is_active=True).order_by("id"))
    if not endpoints:
        raise ServiceError("This study has no model to talk to yet; please tell the researchers.", code="conflict")
    k = answers_for_turn(study, next_turn_index(conversation))
    if len(endpoints) >= k:
        return rng.sample(endpoints, k)
    # Fewer models than answers: some model answers twice (two samples), still in random order.
    picked = endpoints + [rng.choice(endpoints) for _ in range(k - len(endpoints))]
    rng.shuffle(picked)
    return picked


def clean_message(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ServiceError("Write a message first (or pick one of the suggested prompts).")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ServiceError(f"Keep the message under {MAX_MESSAGE_CHARS} characters.")
    return text


@dataclass
class GeneratedAnswer:
    endpoint: ModelEndpoint
    result: ChatResult
    params: dict[str, Any] = field(default_factory=dict)


def generate_blocking(endpoints: list[ModelEndpoint], messages: list[dict[str, str]]) -> list[GeneratedAnswer]:
    """Non-streaming generation, one model after the other (the no-JavaScript path); LLMError on failure."""
    answers = []
    for endpoint in endpoints:
        config = EndpointConfig.from_endpoint(endpoint)
        answers.append(GeneratedAnswer(endpoint, chat(config, messages), config.sampling()))
    return answers


def turn_store(
    *, conversation: Conversation, user_text: str, answers: list[GeneratedAnswer], client_key: str,
    rng: random.Random | None = None,
) -> ConversationTurn:
    """Store one fully generated turn (prompt, answers, pair and assignment) in one transaction.

    Idempotent on client_key (a retried POST returns the stored turn); a second tab that raced for the same
    turn index loses with a ServiceError and stores nothing.
    """
    existing = ConversationTurn.objects.filter(conversation=conversation, client_key=client_key).first()
    if existing is not None:
        return existing
    rng = rng or random.Random()
    study = conversation.study
    try:
        with transaction.atomic():
            if pending_turn(conversation) is not None:
                raise ServiceError("Judge the answers you already have first.", code="conflict")
            index = next_turn_index(conversation)
            if index > study.conversation_turns:
                raise ServiceError("This conversation is complete.", code="conflict")
            prompt = Prompt.objects.create(
                study=study, context=conversation_messages(conversation), text=user_text,
                metadata={"source": "live", "conversation": conversation.pk, "turn": index},
            )
            shown = [
                Candidate.objects.create(
                    prompt=prompt, text=a.result.text, model_name=a.endpoint.name, text_hash=text_hash(a.result.text),
                    metadata={
                        "source": "live", "endpoint_id": a.endpoint.pk, "model_id": a.endpoint.model_id,
                        "served_model": a.result.model, "latency_ms": a.result.latency_ms,
                        "first_token_ms": a.result.first_token_ms, "params": a.params,
                        "finish_reason": a.result.finish_reason, "usage": a.result.usage,
                        "names_model": names_model(a.result.text, a.endpoint),
                    },
                )
                for a in answers
            ]
            turn = ConversationTurn.objects.create(
                conversation=conversation, index=index, prompt=prompt, shown=[c.pk for c in shown],
                client_key=client_key,
            )
            if len(shown) == 2:
                # An A/B turn: the pair is this participant's alone (one slot, claimed now).
                pair = _pair_for(study, prompt, shown[0], shown[1])
                Assignment.objects.create(
                    annotator=conversation.annotator, pair=pair, selector="live",
                    shown_order=Assignment.Order.AB if pair.candidate_a_id == shown[0].pk else Assignment.Order.BA,
                )
                Pair.objects.filter(id=pair.pk).update(n_assigned=F("n_assigned") + 1)
    except IntegrityError as exc:
        raise ServiceError("This turn was already answered in another tab; reload the page.", code="conflict") from exc
    return turn


def turn_candidates(turn: ConversationTurn) -> list[Candidate]:
    by_id = Candidate.objects.in_bulk(turn.shown)
    return [by_id[pk] for pk in turn.shown if pk in by_id]


def turn_pair(turn: ConversationTurn) -> Pair | None:
    return Pair.objects.filter(prompt=turn.prompt).order_by("id").first()


def _finish_turn(turn: ConversationTurn, chosen: Candidate) -> None:
    now = timezone.now()
    turn.chosen, turn.judged_at = chosen, now
    turn.save(update_fields=["chosen", "judged_at"])
    conversation = turn.conversation
    study = conversation.study
    if turn.index >= study.conversation_turns:
        Conversation.objects.filter(pk=conversation.pk, completed_at__isnull=True).update(completed_at=now)
        done = Conversation.objects.filter(annotator=conversation.annotator, completed_at__isnull=False).count()
        if done >= study.conversations_per_annotator:
            Annotator.objects.filter(pk=conversation.annotator_id, completed_at__isnull=True).update(completed_at=now)


SCREEN_TO_SLOT = {"left": 0, "right": 1}


def judged_with_key(annotator: Annotator, client_key: str) -> bool:
    """Whether a turn judgment (choice or ratings) with this client key is already stored."""
    return (Judgment.objects.filter(annotator=annotator, client_key=client_key).exists()
            or Rating.objects.filter(annotator=annotator, client_key=client_key).exists())


def turn_choose(
    *, turn: ConversationTurn, annotator: Annotator, screen_choice: str, client_key: str,
    strength: int | None = None, rationale: str = "", time_ms: int | None = None,
    dimensions: dict[str, str] | None = None,
) -> Judgment:
    """Judge an A/B turn (left / right / tie / both bad, in screen terms); the chosen answer continues.

    For a tie or "both bad" the conversation continues with the answer shown first (left), as it would
    with a coin the participant cannot see; the judgment records the tie / both-bad either way.
    """
    if turn.judged_at is not None:
        existing = Judgment.objects.filter(annotator=annotator, client_key=client_key).first()
        if existing is not None:
            return existing
        raise ServiceError("This turn was already judged.", code="conflict")
    shown = turn_candidates(turn)
    pair = turn_pair(turn)
    if len(shown) != 2 or pair is None:
        raise ServiceError("This turn is rated, not compared.")
    if screen_choice not in ("left", "right", "tie", "bad"):
        raise ServiceError("Choose an answer, a tie, or “both are bad”.")
    left_is_a = pair.candidate_a_id == shown[0].pk
    with transaction.atomic():
        if screen_choice in ("tie", "bad"):
            choice = Judgment.Choice.TIE if screen_choice == "tie" else Judgment.Choice.BOTH_BAD
        else:
            choice = Judgment.Choice.A if (screen_choice == "left") == left_is_a else Judgment.Choice.B

        def to_pair(value: str) -> str:
            if value in ("tie", "bad"):
                return Judgment.Choice.TIE if value == "tie" else Judgment.Choice.BOTH_BAD
            return Judgment.Choice.A if (value == "left") == left_is_a else Judgment.Choice.B

        judgment, _ = services.judgment_create(
            annotator=annotator, pair=pair, choice=choice, client_key=client_key, strength=strength,
            rationale=rationale, time_ms=time_ms,
            dimensions={k: to_pair(v) for k, v in (dimensions or {}).items() if v},
        )
        chosen = shown[SCREEN_TO_SLOT.get(screen_choice, 0)]
        _finish_turn(turn, chosen)
    return judgment


def turn_rate(
    *, turn: ConversationTurn, annotator: Annotator, scores: list[int], client_key: str, time_ms: int | None = None,
) -> list[Judgment]:
    """Rate every answer of an N-way turn 1-100 (PRISM turn one); the highest-rated answer continues
    (the first shown among equals)."""
    if turn.judged_at is not None:
        if Rating.objects.filter(annotator=annotator, client_key=client_key).exists():
            return list(Judgment.objects.filter(annotator=annotator, pair__prompt=turn.prompt))
        raise ServiceError("This turn was already rated.", code="conflict")
    shown = turn_candidates(turn)
    with transaction.atomic():
        judgments = ratings_record(annotator=annotator, prompt=turn.prompt, shown=shown, scores=scores,
                                   client_key=client_key, time_ms=time_ms)
        best = max(range(len(shown)), key=lambda i: (scores[i], -i))
        _finish_turn(turn, shown[best])
    return judgments


# --------------------------------------------------------------------------------------------------------
# Study design: judgment types, conversations, quality controls
# --------------------------------------------------------------------------------------------------------

ATTRIBUTE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@transaction.atomic
def study_set_design(
    *, study: Study, kind: str | None = None, attributes: list[str] | None = None,
    conversation_turns: int | None = None, conversations_per_annotator: int | None = None,
    first_turn_answers: int | None = None, seed_prompts: list[str] | None = None,
    repeat_rate: float | None = None, gold_rate: float | None = None,
) -> Study:
    """Change how a study collects judgments; None leaves a setting as it is."""
    changed: list[str] = []

    def put(name: str, value: Any) -> None:
        if getattr(study, name) != value:
            setattr(study, name, value)
            changed.append(name)

    if kind is not None:
        if kind not in ("pairs", "conversation", "ratings"):
            raise ServiceError('kind must be "pairs", "conversation" or "ratings"')
        put("kind", kind)
    if attributes is not None:
        cleaned = []
        for attr in attributes:
            attr = attr.strip().lower().replace(" ", "_").replace("-", "_")
            if not attr:
                continue
            if not ATTRIBUTE_RE.match(attr):
                raise ServiceError(f"attribute {attr!r}: use letters, digits and _ (at most 40), starting with a letter")
            if attr not in cleaned:
                cleaned.append(attr)
        if len(cleaned) > 8:
            raise ServiceError("at most 8 attributes")
        put("attributes", cleaned)
    for name, value, low, high in (
        ("conversation_turns", conversation_turns, 1, 20),
        ("conversations_per_annotator", conversations_per_annotator, 1, 50),
        ("first_turn_answers", first_turn_answers, 2, MAX_ANSWERS),
    ):
        if value is not None:
            if not low <= value <= high:
                raise ServiceError(f"{name.replace('_', ' ')} must be between {low} and {high}")
            put(name, value)
    if seed_prompts is not None:
        seeds = [s.strip() for s in seed_prompts if s.strip()]
        if len(seeds) > 50 or any(len(s) > MAX_MESSAGE_CHARS for s in seeds):
            raise ServiceError(f"at most 50 seed prompts of at most {MAX_MESSAGE_CHARS} characters")
        put("seed_prompts", seeds)
    for name, rate in (("repeat_rate", repeat_rate), ("gold_rate", gold_rate)):
        if rate is not None:
            if not 0.0 <= rate <= 0.5:
                raise ServiceError(f"the {name.replace('_', ' ')} must be between 0 and 0.5")
            put(name, float(rate))
    if study.repeat_rate + study.gold_rate > 0.5:
        raise ServiceError("repeats and gold pairs together may be at most half of the assignments")
    if changed:
        study.save(update_fields=changed)
    return study



# --------------------------------------------------------------------------------------------------------
# "ratings" studies: rate every response of an imported prompt 1-100
# --------------------------------------------------------------------------------------------------------


def rating_progress(annotator: Annotator) -> tuple[int, int]:
    """(prompts rated, prompts wanted) — a ratings study's pairs_per_annotator counts prompts."""
    done = RatingTask.objects.filter(annotator=annotator, completed_at__isnull=False).count()
    return done, annotator.study.pairs_per_annotator


def rating_task_next(*, annotator: Annotator, rng: random.Random | None = None) -> RatingTask | None:
    """The annotator's open rating task, or a new one: a prompt with 3 or more responses that they have not
    rated and that has fewer than overlap_target tasks, fewest first. None when nothing is left for them."""
    open_task = RatingTask.objects.filter(annotator=annotator, completed_at__isnull=True).select_related("prompt").first()
    if open_task is not None:
        return open_task
    study = annotator.study
    done, quota = rating_progress(annotator)
    if not study.is_open() or done >= quota:
        return None
    rng = rng or random.Random()
    candidates = list(
        Prompt.objects.filter(study=study)
        .annotate(n_candidates=Count("candidates", distinct=True), n_tasks=Count("rating_tasks", distinct=True))
        .filter(n_candidates__gte=3, n_tasks__lt=study.overlap_target)
        .exclude(rating_tasks__annotator=annotator)
        .order_by("n_tasks", "id")
        .values_list("id", "n_tasks")[:50]
    )
    if not candidates:
        return None
    fewest = candidates[0][1]
    order = [pid for pid, n in candidates if n == fewest] + [pid for pid, n in candidates if n != fewest]
    head = order[: sum(1 for _, n in candidates if n == fewest)]
    rng.shuffle(head)  # random among the least-rated, so annotators spread over the prompts
    for prompt_id in head + order[len(head):]:
        with transaction.atomic():
            # Lock the prompt so two annotators cannot both take its last slot.
            prompt = Prompt.objects.select_for_update().get(pk=prompt_id)
            if RatingTask.objects.filter(prompt=prompt).count() >= study.overlap_target:
                continue
            shown = list(prompt.candidates.values_list("id", flat=True))
            rng.shuffle(shown)
            try:
                with transaction.atomic():
                    return RatingTask.objects.create(annotator=annotator, prompt=prompt, shown=shown)
            except IntegrityError:  # a second tab of this annotator took it a moment ago
                continue
    return None


def rating_task_submit(
    *, task: RatingTask, annotator: Annotator, scores: list[int], client_key: str, time_ms: int | None = None,
) -> list[Judgment]:
    """Store the ratings of a task (in the order shown) and the pairs derived from them; idempotent."""
    if task.annotator_id != annotator.pk:
        raise ServiceError("this task is not yours", code="not_found")
    if task.completed_at is not None:
        if Rating.objects.filter(annotator=annotator, client_key=client_key).exists():
            return list(Judgment.objects.filter(annotator=annotator, pair__prompt=task.prompt))
        raise ServiceError("These responses were already rated.", code="conflict")
    by_id = Candidate.objects.in_bulk(task.shown)
    shown = [by_id[pk] for pk in task.shown if pk in by_id]
    with transaction.atomic():
        judgments = ratings_record(annotator=annotator, prompt=task.prompt, shown=shown, scores=scores,
                                   client_key=client_key, time_ms=time_ms)
        now = timezone.now()
        RatingTask.objects.filter(pk=task.pk).update(completed_at=now)
        done, quota = rating_progress(annotator)
        if done >= quota:
            Annotator.objects.filter(pk=annotator.pk, completed_at__isnull=True).update(completed_at=now)
    return judgments
