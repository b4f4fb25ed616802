"""API request validation and response shapes. No domain logic here: that lives in services/selectors."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from feedback import selectors
from feedback.models import Assignment, Judgment, Study
from feedback.profile_schema import ALL_FIELD_NAMES

# ---------------------------------------------------------------------------------------------- errors


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, in words.")


class FieldErrorsSerializer(serializers.Serializer):
    detail = serializers.CharField(required=False)
    errors = serializers.DictField(child=serializers.CharField(), help_text="field name -> message")


class ImportErrorLineSerializer(serializers.Serializer):
    line = serializers.IntegerField(help_text="1-based line (CSV: record start line); 0 for the whole file")
    message = serializers.CharField()


class ImportErrorsSerializer(serializers.Serializer):
    errors = ImportErrorLineSerializer(many=True)


# --------------------------------------------------------------------------------------------- studies


class StudyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    instructions = serializers.CharField(required=False, allow_blank=True, default="")
    consent_text = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="When set, annotators must POST /api/v1/me/consent/ before they get pairs.",
    )
    profile_fields = serializers.ListField(
        child=serializers.ChoiceField(choices=ALL_FIELD_NAMES),
        required=False,
        allow_empty=True,
        help_text="Profile questions the study asks (default: all of them).",
    )
    overlap_target = serializers.IntegerField(min_value=1, max_value=1000, required=False, default=3)
    pairs_per_annotator = serializers.IntegerField(min_value=1, max_value=100_000, required=False, default=10)
    completion_url = serializers.URLField(required=False, allow_blank=True, default="")
    status = serializers.ChoiceField(
        choices=Study.Status.choices, required=False, default=Study.Status.ACTIVE
    )


class StudySerializer(serializers.ModelSerializer):
    join_url = serializers.SerializerMethodField(help_text="Browser join link to hand to a crowd platform.")

    class Meta:
        model = Study
        fields = [
            "id",
            "slug",
            "name",
            "join_url",
            "status",
            "instructions",
            "consent_text",
            "overlap_target",
            "pairs_per_annotator",
            "profile_fields",
            "selector",
            "model_kind",
            "completion_url",
            "created_at",
        ]
        read_only_fields = fields

    def get_join_url(self, study: Study) -> str:
        return selectors.join_url(study)


class StudyCountsSerializer(serializers.Serializer):
    prompts = serializers.IntegerField()
    pairs = serializers.IntegerField()
    judgments = serializers.IntegerField()
    annotators = serializers.IntegerField()
    annotators_completed = serializers.IntegerField()
    pairs_complete = serializers.IntegerField(help_text="Pairs that reached the overlap target.")
    target_judgments = serializers.IntegerField()
    progress_percent = serializers.IntegerField()


class StudyDetailSerializer(StudySerializer):
    counts = serializers.SerializerMethodField()

    class Meta(StudySerializer.Meta):
        fields = [*StudySerializer.Meta.fields, "counts"]
        read_only_fields = fields

    @extend_schema_field(StudyCountsSerializer)
    def get_counts(self, study: Study) -> dict[str, Any]:
        # Computed by the view (selectors.study_counts) and handed in through the context.
        return StudyCountsSerializer(self.context["counts"]).data


class ImportFileSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="JSONL or CSV, optionally gzipped (trl, responses or hh-rlhf rows)."
    )


class ImportResultSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=["trl", "responses", "hh"])
    duplicates = serializers.IntegerField(help_text="Rows that were already in the study (allow_duplicates=1).")
    prompts = serializers.IntegerField()
    candidates = serializers.IntegerField()
    pairs = serializers.IntegerField()


# ---------------------------------------------------------------------------------------------- joining


class JoinSerializer(serializers.Serializer):
    external_id = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="Crowd-platform id (e.g. a Prolific PID). Rejoining with it needs resume_token.",
    )
    resume_token = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="The resume_token returned by this participant's first join (proves a rejoin is theirs).",
    )


class JoinResultSerializer(serializers.Serializer):
    annotator_id = serializers.IntegerField()
    study_id = serializers.IntegerField()
    token = serializers.CharField(help_text='Send as "Authorization: Token <token>" on later calls.')
    consent_required = serializers.BooleanField(
        help_text="True until the annotator consents (if the study asks)."
    )
    resume_token = serializers.CharField(
        required=False,
        help_text="Only on the first join (201): send it with a later join to resume. Never shown again.",
    )


class ResumeLinkRequestSerializer(serializers.Serializer):
    external_id = serializers.CharField(max_length=200, help_text="The participant's crowd-platform id.")


class ResumeLinkSerializer(serializers.Serializer):
    url = serializers.CharField(help_text="Signed, single-use link that continues the participant's session.")
    expires_in_seconds = serializers.IntegerField()


class MeSerializer(serializers.Serializer):
    annotator_id = serializers.IntegerField(source="id")
    study_id = serializers.IntegerField()
    pseudonym = serializers.CharField()
    consented_at = serializers.DateTimeField(allow_null=True)
    profile_completed_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    completion_code = serializers.SerializerMethodField(help_text="Only once the annotator has finished.")

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_completion_code(self, annotator) -> str | None:
        return annotator.completion_code if annotator.completed_at else None


class ConsentResultSerializer(serializers.Serializer):
    consented_at = serializers.DateTimeField()


class ProfileChoiceSerializer(serializers.Serializer):
    code = serializers.CharField()
    label = serializers.CharField()


class ProfileFieldSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    kind = serializers.ChoiceField(
        choices=["choice", "multi", "sliders", "text"],
        help_text="choice: one code; multi: a list of codes; sliders: {code: 1..100}; text: free text.",
    )
    choices = serializers.SerializerMethodField()
    max_length = serializers.IntegerField(help_text="For text fields; 0 otherwise.")

    @extend_schema_field(ProfileChoiceSerializer(many=True))
    def get_choices(self, spec) -> list[dict[str, str]]:
        return [{"code": code, "label": label} for code, label in spec.choices]


class ProfileSerializer(serializers.Serializer):
    data = serializers.DictField(help_text="field name -> answer (see `fields`); missing = not answered yet.")
    completed_at = serializers.DateTimeField(allow_null=True)
    prefer_not_to_say = serializers.CharField(help_text="The code that skips any question explicitly.")
    fields = ProfileFieldSerializer(many=True, help_text="The questions this study asks, in order.")


class ProfileUpdateSerializer(serializers.Serializer):
    data = serializers.DictField(help_text="Replaces all answers; validated against the study's fields.")


# ------------------------------------------------------------------------------------------- annotating


class CandidateSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["user", "assistant", "system"])
    content = serializers.CharField()


class ProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()


class NextPairSerializer(serializers.Serializer):
    pair_id = serializers.IntegerField()
    assignment_id = serializers.IntegerField()
    context = MessageSerializer(many=True, help_text="Earlier turns of the conversation, oldest first.")
    prompt = serializers.CharField(help_text="The final user turn both candidates answer.")
    a = CandidateSerializer(
        help_text='The pair\'s canonical candidate A; choice "a" in POST /judgments/ means it.'
    )
    b = CandidateSerializer(help_text='The pair\'s canonical candidate B; choice "b" means it.')
    shown_order = serializers.ChoiceField(
        choices=Assignment.Order.choices,
        help_text='Suggested display order ("ab": a on the left). The judgment records this order, so '
        "clients should honour it; a/b and the choice never depend on it.",
    )
    progress = ProgressSerializer()


class JudgmentCreateSerializer(serializers.Serializer):
    pair_id = serializers.IntegerField(min_value=1)
    choice = serializers.ChoiceField(
        choices=Judgment.Choice.choices,
        help_text='"a", "b" (as in next-pair), "tie" or "bad" (both responses are bad; like a tie it has no '
        "direction, so it carries no strength and no reward-model training signal).",
    )
    strength = serializers.IntegerField(
        min_value=1,
        max_value=100,
        required=False,
        allow_null=True,
        default=None,
        help_text="How strongly (1-100); ignored for a tie or both bad.",
    )
    dimensions = serializers.DictField(
        child=serializers.ChoiceField(choices=Judgment.Choice.choices),
        required=False,
        default=dict,
        help_text='Per-dimension choices for the study\'s attributes, e.g. {"safety": "a", "factuality": "tie"}.',
    )
    rationale = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    time_ms = serializers.IntegerField(
        min_value=0, max_value=86_400_000, required=False, allow_null=True, default=None
    )
    client_key = serializers.CharField(
        min_length=1,
        max_length=64,
        help_text="Idempotency key: resending the same key returns the stored judgment.",
    )


_CHOICES = frozenset(Judgment.Choice.values)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _plain_int(value: Any, lo: int, hi: int) -> bool:
    return type(value) is int and lo <= value <= hi


def _plain_text(value: Any, max_length: int) -> bool:
    """A str DRF's CharField keeps as is, but for trimming: no NUL and no surrogate characters."""
    return (isinstance(value, str) and len(value.strip()) <= max_length and "\x00" not in value
            and _SURROGATE.search(value) is None)


def judgment_create_data(data: Any) -> dict[str, Any] | None:
    """JudgmentCreateSerializer(data=data).validated_data for a body that plainly passes it, without the
    serializer; None for anything else (the caller then runs the serializer, for its coercions and errors).

    Building and running the serializer's seven fields cost ~7 % of the annotation loop's CPU
    (benchmarks/judgment_cpu_bench.py), while real clients send exactly-typed JSON. "Plainly passes" is
    narrower than the serializer: only exact types (no "5" for 5, no 5.0), every value within its field's
    bounds; tests/feedback/test_serializers.py checks both agree on valid and invalid bodies."""
    if not isinstance(data, dict):
        return None
    pair_id, choice, client_key = data.get("pair_id"), data.get("choice"), data.get("client_key", "")
    strength, time_ms = data.get("strength"), data.get("time_ms")
    rationale, dimensions = data.get("rationale", ""), data.get("dimensions", {})
    if not (_plain_int(pair_id, 1, 2**63 - 1) and isinstance(choice, str) and choice in _CHOICES
            and (strength is None or _plain_int(strength, 1, 100))
            and (time_ms is None or _plain_int(time_ms, 0, 86_400_000))
            and _plain_text(rationale, 5000) and _plain_text(client_key, 64) and client_key.strip()
            and type(dimensions) is dict
            and all(isinstance(k, str) and isinstance(v, str) and v in _CHOICES for k, v in dimensions.items())):
        return None
    return {"pair_id": pair_id, "choice": choice, "strength": strength, "dimensions": dict(dimensions),
            "rationale": rationale.strip(), "time_ms": time_ms, "client_key": client_key.strip()}


class JudgmentSerializer(serializers.ModelSerializer):
    pair_id = serializers.IntegerField()

    class Meta:
        model = Judgment
        fields = [
            "id",
            "pair_id",
            "choice",
            "strength",
            "rationale",
            "time_ms",
            "shown_order",
            "client_key",
            "dimensions",
            "source",
            "created_at",
        ]
        read_only_fields = fields


# The annotation loop's two responses, built without instantiating their serializers. A DRF serializer
# deep-copies its declared fields on every instance (a ModelSerializer also introspects the model); for
# these two small, fixed shapes that was ~7 % of an annotation loop's server CPU (judgment_cpu_bench.py).
# NextPairSerializer / JudgmentSerializer stay the documented shapes (OpenAPI); tests pin the bodies below
# to exactly what those serializers return.
_DATETIME = serializers.DateTimeField()


def next_pair_body(*, assignment: Assignment, done: int, total: int) -> dict[str, Any]:
    """NextPairSerializer's representation of an assignment (its pair with prompt and candidates loaded)."""
    pair = assignment.pair
    prompt = pair.prompt
    return {
        "pair_id": int(pair.pk),
        "assignment_id": int(assignment.pk),
        "context": [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt.context],
        "prompt": str(prompt.text),
        "a": {"id": int(pair.candidate_a_id), "text": str(pair.candidate_a.text)},
        "b": {"id": int(pair.candidate_b_id), "text": str(pair.candidate_b.text)},
        "shown_order": assignment.shown_order,
        "progress": {"done": int(done), "total": int(total)},
    }


def judgment_body(judgment: Judgment) -> dict[str, Any]:
    """JudgmentSerializer(judgment).data, field for field."""
    return {
        "id": judgment.pk,
        "pair_id": int(judgment.pair_id),
        "choice": judgment.choice,
        "strength": judgment.strength,
        "rationale": judgment.rationale,
        "time_ms": judgment.time_ms,
        "shown_order": judgment.shown_order,
        "client_key": judgment.client_key,
        "dimensions": judgment.dimensions,
        "source": judgment.source,
        "created_at": None if judgment.created_at is None else _DATETIME.to_representation(judgment.created_at),
    }


class StudyJudgmentSerializer(serializers.ModelSerializer):
    """A row of a study's judgments for researchers: the annotator by pseudonym, never their external id."""

    annotator = serializers.CharField(
        source="annotator.pseudonym", help_text="Stable pseudonym of the annotator."
    )
    pair_id = serializers.IntegerField()
    candidate_a_id = serializers.IntegerField(source="pair.candidate_a_id")
    candidate_b_id = serializers.IntegerField(source="pair.candidate_b_id")
    model_a = serializers.CharField(source="pair.candidate_a.model_name")
    model_b = serializers.CharField(source="pair.candidate_b.model_name")
    reference_choice = serializers.CharField(source="pair.reference_choice")

    class Meta:
        model = Judgment
        fields = [
            "id",
            "annotator",
            "pair_id",
            "choice",
            "strength",
            "rationale",
            "time_ms",
            "shown_order",
            "created_at",
            "candidate_a_id",
            "candidate_b_id",
            "model_a",
            "model_b",
            "reference_choice",
        ]
        read_only_fields = fields
