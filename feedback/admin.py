from django.contrib import admin

from feedback.models import (
    Annotator,
    Assignment,
    Candidate,
    ExclusionEvent,
    Judgment,
    ModelEndpoint,
    Pair,
    Profile,
    Prompt,
    Study,
)


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "status", "overlap_target", "pairs_per_annotator", "selector", "created_at")
    list_filter = ("status", "selector")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("researchers",)


class CandidateInline(admin.TabularInline):
    model = Candidate
    extra = 0
    fields = ("model_name", "text")


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("id", "study", "short_text", "created_at")
    list_filter = ("study",)
    search_fields = ("text",)
    inlines = [CandidateInline]

    @admin.display(description="text")
    def short_text(self, obj: Prompt) -> str:
        return obj.text[:80]


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ("id", "model_name", "prompt")
    list_filter = ("model_name",)
    search_fields = ("text", "model_name")
    raw_id_fields = ("prompt",)


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    list_display = ("id", "study", "n_assigned", "n_judgments", "reference_choice", "gold_choice")
    list_filter = ("study",)
    raw_id_fields = ("prompt", "candidate_a", "candidate_b")


class ProfileInline(admin.StackedInline):
    model = Profile
    extra = 0


@admin.register(Annotator)
class AnnotatorAdmin(admin.ModelAdmin):
    list_display = ("pseudonym", "study", "external_id", "consented_at", "completed_at", "completion_code")
    list_filter = ("study",)
    search_fields = ("pseudonym", "external_id")
    raw_id_fields = ("user",)
    inlines = [ProfileInline]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("id", "annotator", "pair", "shown_order", "is_repeat", "assigned_at", "completed_at")
    raw_id_fields = ("annotator", "pair")


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ("id", "annotator", "pair", "choice", "strength", "time_ms", "created_at")
    list_filter = ("choice", "pair__study")
    raw_id_fields = ("annotator", "pair", "assignment")


@admin.register(ExclusionEvent)
class ExclusionEventAdmin(admin.ModelAdmin):
    """The audit trail of researchers' exclusion decisions: read-only (the study pages write it)."""

    list_display = ("at", "annotator", "excluded", "by", "reason")
    list_filter = ("excluded",)
    search_fields = ("annotator__pseudonym", "reason")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
@admin.register(ModelEndpoint)
class ModelEndpointAdmin(admin.ModelAdmin):
    list_display = ("name", "study", "base_url", "model_id", "is_active")
    list_filter = ("study", "is_active")
    # The API key is never rendered, not even to staff: set it on the study's endpoints page.
    exclude = ("api_key",)
