"""Admin for the training models: read-mostly (training writes these; the admin only looks and deletes)."""

from __future__ import annotations

from django.contrib import admin, messages

from training import services
from training.models import AnnotatorPosterior, ModelVersion, TextEmbedding


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(TextEmbedding)
class TextEmbeddingAdmin(ReadOnlyAdmin):
    list_display = ("id", "model_id", "text_hash", "dim", "created_at")
    list_filter = ("model_id",)
    search_fields = ("text_hash",)
    exclude = ("vector",)  # a binary blob: nothing to read


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("id", "study", "kind", "status", "accuracy", "n_train", "n_heldout", "attempts", "created_at",
                    "finished_at")
    list_filter = ("status", "kind", "study")
    list_select_related = ("study",)
    actions = ["retrain_same_kind"]

    @admin.display(description="held-out accuracy")
    def accuracy(self, obj: ModelVersion) -> str:
        acc = (obj.metrics or {}).get("accuracy")
        return f"{acc:.3f}" if isinstance(acc, (int, float)) else "—"

    @admin.action(description="Retrain now (same study and kind)")
    def retrain_same_kind(self, request, queryset):
        for version in queryset.select_related("study"):
            try:
                new = services.model_version_request(study=version.study, kind=version.kind)
            except services.NotEnoughJudgments as exc:
                self.message_user(request, f"{version.study}: {exc}", messages.WARNING)
                continue
            self.message_user(request, f"{version.study}: model version {new.pk} is {new.status}", messages.INFO)


@admin.register(AnnotatorPosterior)
class AnnotatorPosteriorAdmin(ReadOnlyAdmin):
    list_display = ("id", "annotator", "model_version", "n_labels", "n_predicted", "n_correct", "last_judgment_id",
                    "updated_at")
    list_filter = ("model_version__study",)
    list_select_related = ("annotator", "model_version__study")
    search_fields = ("annotator__pseudonym",)
