from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q

from feedback.profile_schema import ALL_FIELD_NAMES


def _default_profile_fields() -> list[str]:
    return list(ALL_FIELD_NAMES)


def text_hash(text: str) -> str:
    # Embeddings are stored once per distinct text; this is their key.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# The reward-model kinds a study can train (training.services.MODEL_KINDS holds the same names).
MODEL_KIND_CHOICES = [
    ("vpl", "VPL — variational user latent (default)"),
    ("pal", "PAL — mixture of ideal points"),
    ("bt", "Bradley–Terry — one shared reward, no personalization"),
]


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        CLOSED = "closed", "Closed"

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=80, unique=True)
    instructions = models.TextField(blank=True, default="")
    consent_text = models.TextField(blank=True, default="")
    profile_fields = models.JSONField(default=_default_profile_fields, blank=True)
    overlap_target = models.PositiveIntegerField(default=3, help_text="Judgments wanted per pair.")
    pairs_per_annotator = models.PositiveIntegerField(default=10, help_text="Pairs each annotator labels.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    selector = models.CharField(max_length=40, default="random")
    model_kind = models.CharField(max_length=10, default="vpl")
    completion_url = models.URLField(
        blank=True, default="", help_text="Crowd-platform return link; {code} is replaced by the completion code."
    )
    # Sent instead of a completion code (in the completion URL) to a worker turned away because the study is full.
    screenout_code = models.CharField(max_length=40, blank=True, default="")
    # The study's retrain rule; null = the site default (CHORUS_RETRAIN_*), 0 = never automatically.
    retrain_every_judgments = models.PositiveIntegerField(null=True, blank=True)
    retrain_every_minutes = models.PositiveIntegerField(null=True, blank=True)
    # --- issue 12: judgment types, live conversations, quality controls -------------------------------
    # "pairs": annotators judge imported pairs; "conversation": they talk to the study's model endpoints.
    # "ratings": annotators rate every response (3 or more) of an imported prompt 1-100.
    kind = models.CharField(max_length=12, default="pairs", choices=[("pairs", "Imported pairs"),
                                                                   ("conversation", "Live conversation"),
                                                                   ("ratings", "Rate imported responses")])
    # Per-dimension choices: attribute names (e.g. ["factuality", "safety"]); one extra choice per attribute.
    attributes = models.JSONField(default=list, blank=True)
    # Conversation studies: turns per conversation, conversations per annotator, answers on the first turn
    # (3 or 4 means PRISM-style 1-100 ratings of each; later turns are always an A/B of two answers).
    conversation_turns = models.PositiveSmallIntegerField(default=2)
    conversations_per_annotator = models.PositiveSmallIntegerField(default=1)
    first_turn_answers = models.PositiveSmallIntegerField(default=2)
    # Opening prompts a participant may pick instead of writing one (a list of strings).
    seed_prompts = models.JSONField(default=list, blank=True)
    # Quality controls: the share of assignments that repeat an earlier pair (sides swapped) and that are
    # gold/attention pairs with a known answer. Both count towards pairs_per_annotator.
    repeat_rate = models.FloatField(default=0.0)
    gold_rate = models.FloatField(default=0.0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    researchers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="studies")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return self.name

    def is_open(self) -> bool:
        return self.status == self.Status.ACTIVE

    def is_conversation(self) -> bool:
        return self.kind == "conversation"

    def is_ratings(self) -> bool:
        return self.kind == "ratings"

    def has_researcher(self, user) -> bool:
        if not user.is_authenticated:
            return False
        if user.is_superuser:
            return True
        return self.created_by_id == user.pk or self.researchers.filter(pk=user.pk).exists()


class Prompt(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="prompts")
    # Earlier turns of a multi-turn conversation: [{"role": "user"|"assistant", "content": str}, ...].
    context = models.JSONField(default=list, blank=True)
    text = models.TextField()  # the final user turn the candidates answer
    metadata = models.JSONField(default=dict, blank=True)
    # sha256 of the row's content (context, prompt, candidate texts): a re-imported file or a repeated row
    # is noticed and refused unless the researcher confirms (feedback.services.study_import).
    content_hash = models.CharField(max_length=64, blank=True, default="", db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.text[:60]

    def as_messages(self) -> list[dict[str, str]]:
        return [*self.context, {"role": "user", "content": self.text}]


class Candidate(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="candidates")
    text = models.TextField()
    model_name = models.CharField(max_length=200, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    text_hash = models.CharField(max_length=64, db_index=True)

    def __str__(self) -> str:
        return f"{self.model_name or 'candidate'} #{self.pk}"


class Pair(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="pairs")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="pairs")
    candidate_a = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    candidate_b = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    # The label the data came with (TRL / hh-rlhf "chosen"), kept for reference and agreement checks.
    reference_choice = models.CharField(max_length=1, blank=True, default="")
    # A gold / attention pair: the known right answer ("a" or "b"); blank for an ordinary pair. Gold pairs
    # are shown only as quality checks (never by the selectors) and stay out of training and leaderboards.
    gold_choice = models.CharField(max_length=1, blank=True, default="")
    # Claimed slots (open + judged assignments); never exceeds the study's overlap target.
    n_assigned = models.PositiveIntegerField(default=0)
    n_judgments = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["candidate_a", "candidate_b"], name="pair_unique_candidates"),
            models.CheckConstraint(condition=~Q(candidate_a=models.F("candidate_b")), name="pair_distinct"),
        ]
        # The random selector reads the lowest-filled pairs from a random id onwards.
        indexes = [models.Index(fields=["study", "n_assigned", "id"], name="pair_fill_order")]

    def __str__(self) -> str:
        return f"Pair #{self.pk}"


def _completion_code() -> str:
    return secrets.token_hex(4).upper()


def _pseudonym() -> str:
    return "ann_" + secrets.token_hex(6)


class Annotator(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="annotators")
    # Each join creates its own user, so a person's sessions in different studies stay separate.
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotator")
    external_id = models.CharField(max_length=200, blank=True, default="", help_text="e.g. a Prolific PID")
    # Stable pseudonym used in exports and dashboards, never the crowd-platform id.
    pseudonym = models.CharField(max_length=20, unique=True, default=_pseudonym)
    consented_at = models.DateTimeField(null=True, blank=True)
    profile_completed_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    completion_code = models.CharField(max_length=16, default=_completion_code)
    # sha256 of the resume secret kept in the participant's own browser (a signed cookie) and returned to API
    # clients at their first join only. A crowd id alone is public to the platform and guessable, so a
    # rejoin must prove it is the same person: the secret, the session, the API token or a signed link.
    resume_secret_hash = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    # A researcher's quality decision: an excluded annotator's judgments stay stored but are left out of
    # training and exports. Reversible; every change is logged in ExclusionEvent.
    excluded_at = models.DateTimeField(null=True, blank=True)
    excluded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    exclusion_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["study", "external_id"], condition=~Q(external_id=""), name="annotator_unique_external_id"
            )
        ]

    def __str__(self) -> str:
        return self.pseudonym

    def resume_secret_matches(self, secret: str) -> bool:
        if not secret or not self.resume_secret_hash:
            return False
        return hmac.compare_digest(self.resume_secret_hash, hashlib.sha256(secret.encode()).hexdigest())

    @property
    def is_excluded(self) -> bool:
        return self.excluded_at is not None


class Profile(models.Model):
    annotator = models.OneToOneField(Annotator, on_delete=models.CASCADE, related_name="profile")
    # PRISM field name -> code (see feedback.profile_schema); "prefer-not-to-say" is an explicit skip.
    data = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Profile of {self.annotator}"


class Assignment(models.Model):
    class Order(models.TextChoices):
        AB = "ab", "candidate A shown on the left"
        BA = "ba", "candidate B shown on the left"

    annotator = models.ForeignKey(Annotator, on_delete=models.CASCADE, related_name="assignments")
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="assignments")
    shown_order = models.CharField(max_length=2, choices=Order.choices)
    # A deliberate second showing (sides swapped) to measure the annotator's consistency.
    is_repeat = models.BooleanField(default=False)
    selector = models.CharField(max_length=40, default="random")
    assigned_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["annotator", "pair"], condition=Q(is_repeat=False), name="assignment_once_per_pair"
            )
        ]
        indexes = [models.Index(fields=["annotator", "completed_at"])]

    def __str__(self) -> str:
        return f"Assignment #{self.pk}"

    def is_open(self) -> bool:
        return self.completed_at is None and self.released_at is None

    def left_right(self) -> tuple[Candidate, Candidate]:
        a, b = self.pair.candidate_a, self.pair.candidate_b
        return (a, b) if self.shown_order == self.Order.AB else (b, a)


class Judgment(models.Model):
    class Choice(models.TextChoices):
        A = "a", "A"
        B = "b", "B"
        TIE = "tie", "Tie"
        # Chatbot Arena's "both are bad": no direction, so like a tie it stays out of Bradley-Terry fits.
        BOTH_BAD = "bad", "Both bad"

    class Source(models.TextChoices):
        CHOICE = "choice", "A/B choice"
        # Derived from two 1-100 ratings of the same N-way rating (see feedback.conversations).
        RATING = "rating", "From 1-100 ratings"

    annotator = models.ForeignKey(Annotator, on_delete=models.CASCADE, related_name="judgments")
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="judgments")
    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="judgment")
    # Always in the pair's terms (candidate_a / candidate_b), whatever side it was shown on.
    choice = models.CharField(max_length=3, choices=Choice.choices)
    shown_order = models.CharField(max_length=2, choices=Assignment.Order.choices)
    strength = models.PositiveSmallIntegerField(null=True, blank=True)  # 1–100 slider, as in PRISM
    rationale = models.TextField(blank=True, default="")
    time_ms = models.PositiveIntegerField(null=True, blank=True)
    client_key = models.CharField(max_length=64)
    # Per-dimension choices {attribute: "a"|"b"|"tie"|"bad"} in the pair's terms, for the study's attributes.
    dimensions = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.CHOICE)
    created_at = models.DateTimeField(auto_now_add=True)

    # Choices without a direction: no chosen/rejected, no strength, no Bradley-Terry battle.
    UNDIRECTED = ("tie", "bad")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["annotator", "client_key"], name="judgment_client_key_once"),
            models.CheckConstraint(
                condition=Q(strength__isnull=True) | Q(strength__gte=1, strength__lte=100), name="judgment_strength"
            ),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Judgment #{self.pk}"

    @property
    def chosen_side_shown(self) -> str:
        """The side the annotator clicked ("left"/"right"/"tie"/"bad") — for side-bias checks."""
        if self.choice == self.Choice.TIE:
            return "tie"
        if self.choice == self.Choice.BOTH_BAD:
            return "bad"
        a_left = self.shown_order == Assignment.Order.AB
        return "left" if (self.choice == self.Choice.A) == a_left else "right"


class ExclusionEvent(models.Model):
    """Who excluded (or re-included) an annotator, when and why: the audit trail of quality decisions."""

    annotator = models.ForeignKey(Annotator, on_delete=models.CASCADE, related_name="exclusion_events")
    excluded = models.BooleanField()  # True: excluded; False: included again
    reason = models.CharField(max_length=200, blank=True, default="")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{'exclude' if self.excluded else 'include'} {self.annotator} by {self.by}"
# --- issue 12: N-way 1-100 ratings, model endpoints, live conversations --------------------------------


class Rating(models.Model):
    """One 1-100 rating of one answer in an N-way rating (PRISM turn one); pairs are derived from them."""

    annotator = models.ForeignKey(Annotator, on_delete=models.CASCADE, related_name="ratings")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="ratings")
    candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="ratings")
    score = models.PositiveSmallIntegerField()
    position = models.PositiveSmallIntegerField(help_text="Where the answer was shown, 1 = first.")
    client_key = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["annotator", "candidate"], name="rating_once_per_candidate"),
            models.CheckConstraint(condition=Q(score__gte=1, score__lte=100), name="rating_score_range"),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Rating #{self.pk}"


class ModelEndpoint(models.Model):
    """A model a conversation study talks to: any OpenAI-compatible /v1/chat/completions server."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="endpoints")
    # The name researchers see (exports, dashboards); participants never do.
    name = models.CharField(max_length=100)
    base_url = models.URLField(max_length=500, help_text="e.g. http://localhost:8001/v1")
    model_id = models.CharField(max_length=200, help_text='The "model" field sent to the server.')
    # Sampling parameters sent with every request: temperature, top_p, max_tokens, seed, ...
    params = models.JSONField(default=dict, blank=True)
    system_prompt = models.TextField(blank=True, default="")
    # Kept server-side only: never rendered on a page, in an export or in an API response.
    api_key = models.CharField(max_length=500, blank=True, default="")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["study", "name"], name="endpoint_unique_name")]
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:  # never the key
        return f"<ModelEndpoint {self.pk} {self.name!r} {self.base_url}>"


class Conversation(models.Model):
    """A participant's live conversation; each turn is a Prompt with generated Candidates and Pair(s)."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="conversations")
    annotator = models.ForeignKey(Annotator, on_delete=models.CASCADE, related_name="conversations")
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Conversation #{self.pk}"


class ConversationTurn(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveSmallIntegerField()  # 1 = the opening turn
    prompt = models.OneToOneField(Prompt, on_delete=models.CASCADE, related_name="conversation_turn")
    # The answers in the order they were shown to the participant.
    shown = models.JSONField(default=list)
    # The answer that continues the conversation (set when the turn is judged).
    chosen = models.ForeignKey(Candidate, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    judged_at = models.DateTimeField(null=True, blank=True)
    client_key = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "index"], name="turn_unique_index"),
            models.UniqueConstraint(fields=["conversation", "client_key"], name="turn_client_key_once"),
        ]
        ordering = ["conversation_id", "index"]

    def __str__(self) -> str:
        return f"Turn {self.index} of {self.conversation}"


class RatingTask(models.Model):
    """An imported prompt whose responses (3 or more) one annotator rates 1-100 (a "ratings" study).

    At most study.overlap_target tasks per prompt; the ratings become Rating rows and derived pairs.
    """

    annotator = models.ForeignKey(Annotator, on_delete=models.CASCADE, related_name="rating_tasks")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="rating_tasks")
    shown = models.JSONField(default=list)  # candidate ids in the order shown
    assigned_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["annotator", "prompt"], name="rating_task_once")]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Rating task #{self.pk}"
