"""Request validation and response shapes of the training API (training.api_views). No domain logic here."""

from __future__ import annotations

from rest_framework import serializers

from feedback.models import Candidate
from feedback.selection import SELECTORS
from training.models import ModelVersion
from training.services import MODEL_KINDS


class RetrainRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=MODEL_KINDS, required=False, help_text="Model kind to train (default: the study's model_kind)."
    )


class RetrainResultSerializer(serializers.Serializer):
    model_version_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ModelVersion.Status.choices)
    broker_down = serializers.BooleanField(
        help_text="True when the task broker could not be reached: the job stays queued and is sent by the "
        "recovery sweep once the broker is back."
    )
    detail = serializers.CharField(required=False)


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        # artifact_path is a server-side path: never shown.
        fields = [
            "id", "kind", "status", "metrics", "data_cutoff", "n_train", "n_heldout", "attempts", "error",
            "created_at", "started_at", "heartbeat_at", "finished_at",
        ]
        read_only_fields = fields


class PredictQuerySerializer(serializers.Serializer):
    a = serializers.IntegerField(min_value=1, help_text="Candidate id (GET /studies/{id}/candidates/).")
    b = serializers.IntegerField(min_value=1, help_text="Another candidate id answering the same prompt.")

    def validate(self, attrs):
        if attrs["a"] == attrs["b"]:
            raise serializers.ValidationError({"b": "a and b must be two different candidates"})
        return attrs


class PredictionSerializer(serializers.Serializer):
    p_a = serializers.FloatField(help_text="Predicted probability that this annotator prefers candidate a.")
    std = serializers.FloatField(help_text="Posterior standard deviation of that probability.")
    model_version = serializers.IntegerField(help_text="Id of the active model version that predicted.")
    n_labels = serializers.IntegerField(help_text="Labels of this annotator folded into their posterior.")


class StudyCandidateSerializer(serializers.ModelSerializer):
    prompt_id = serializers.IntegerField(read_only=True)
    prompt_text = serializers.CharField(source="prompt.text", read_only=True)

    class Meta:
        model = Candidate
        fields = ["id", "prompt_id", "prompt_text", "model_name", "text"]
        read_only_fields = fields


class TrainingSettingsSerializer(serializers.Serializer):
    """Checked against the live registries, so selectors registered by other apps are accepted too."""

    selector = serializers.CharField(required=False, help_text="random | uncertainty | info_gain | mixed")
    model_kind = serializers.CharField(required=False, help_text="bt | vpl | pal")

    def validate_selector(self, value: str) -> str:
        if value not in SELECTORS:
            raise serializers.ValidationError(f"unknown selector {value!r}; choose one of {sorted(SELECTORS)}")
        return value

    def validate_model_kind(self, value: str) -> str:
        if value not in MODEL_KINDS:
            raise serializers.ValidationError(f"unknown model kind {value!r}; choose one of {list(MODEL_KINDS)}")
        return value
