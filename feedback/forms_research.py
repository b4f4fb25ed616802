"""Forms of the researcher pages; they only validate input — writes go through feedback.services."""

from __future__ import annotations

from django import forms
from django.conf import settings

from feedback.models import MODEL_KIND_CHOICES, Study
from feedback.profile_schema import ALL_FIELD_NAMES, FIELDS

# Shown in the selector dropdown; a selector registered without a label shows its name.
SELECTOR_LABELS = {
    "mixed": "Active learning: information gain, 20% random (recommended)",
    "info_gain": "Active learning: information gain only",
    "uncertainty": "Active learning: most uncertain pair",
    "random": "Random (overlap-balanced)",
}
# New studies from the UI: active learning, which serves overlap-balanced random pairs until a model is
# active (training.active_learning.ModelSelector) — so it is right both before and after the first model.
DEFAULT_SELECTOR = "mixed"
RETRAIN_HELP = "Empty: the site default ({default}). 0: never automatically (use “Train now”)."


def selector_choices() -> list[tuple[str, str]]:
    from feedback.selection import SELECTORS

    names = sorted(SELECTORS, key=lambda n: (list(SELECTOR_LABELS).index(n) if n in SELECTOR_LABELS else 99, n))
    return [(n, SELECTOR_LABELS.get(n, n)) for n in names]


def _settings_fields() -> dict[str, forms.Field]:
    """The fields of the settings card, shared by the create form and the study page."""
    return {
        "selector": forms.ChoiceField(
            choices=selector_choices, initial=DEFAULT_SELECTOR, label="Pair selection",
            help_text="Which pair each annotator sees next. Active learning serves random pairs until a model is active.",
        ),
        "model_kind": forms.ChoiceField(
            choices=MODEL_KIND_CHOICES, initial="vpl", label="Reward model",
            help_text="Applies from the next training run; the active model keeps serving until then.",
        ),
        "overlap_target": forms.IntegerField(
            min_value=1, max_value=1000, initial=3, label="Overlap", help_text="Judgments wanted per pair."
        ),
        "pairs_per_annotator": forms.IntegerField(
            min_value=1, max_value=10_000, initial=10, help_text="Pairs each annotator labels."
        ),
        "completion_url": forms.URLField(
            required=False,
            assume_scheme="https",
            label="Completion URL",
            help_text="Crowd-platform return link; {code} is replaced by the annotator's completion code.",
        ),
        "screenout_code": forms.CharField(
            required=False, max_length=40, label="Screen-out code",
            help_text="Put into the completion URL for a worker turned away because the study is full "
            "(e.g. Prolific's screen-out code). Empty: they get no code and no return link.",
        ),
        "retrain_every_judgments": forms.IntegerField(
            required=False, min_value=0, max_value=1_000_000, label="Retrain after this many new judgments",
            help_text=RETRAIN_HELP.format(
                default=f"first model after {settings.CHORUS_RETRAIN_MIN_JUDGMENTS}, "
                f"then every {settings.CHORUS_RETRAIN_EVERY_JUDGMENTS}"
            ),
        ),
        "retrain_every_minutes": forms.IntegerField(
            required=False, min_value=0, max_value=100_000, label="…or this many minutes after the last run",
            help_text=RETRAIN_HELP.format(default=f"{settings.CHORUS_RETRAIN_EVERY_MINUTES} minutes")
            + " Only when new judgments arrived.",
        ),
    }


class StudySettingsForm(forms.Form):
    """The settings card of the study page (every field at once; writes via services.study_settings_update)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields.update(_settings_fields())

    @classmethod
    def for_study(cls, study: Study) -> StudySettingsForm:
        return cls(initial={name: getattr(study, name) for name in SETTINGS_FIELDS})


SETTINGS_FIELDS = (
    "selector", "model_kind", "overlap_target", "pairs_per_annotator", "completion_url", "screenout_code",
    "retrain_every_judgments", "retrain_every_minutes",
)


class StudyCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5}),
        required=False,
        help_text="Shown to annotators before they start (Markdown).",
    )
    consent_text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5}),
        required=False,
        help_text="Annotators must agree to this before they begin (Markdown).",
    )
    profile_fields = forms.MultipleChoiceField(
        choices=[(f.name, f.label) for f in FIELDS],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        initial=list(ALL_FIELD_NAMES),
        label="Profile questions to ask",
        help_text="PRISM survey questions; every one can be answered “prefer not to say”.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The settings card's fields, after the study's texts and questions.
        self.fields.update(_settings_fields())
        # A POST without them (a script, an older page) gets the defaults.
        self.fields["selector"].required = False
        self.fields["model_kind"].required = False

    def clean_selector(self) -> str:
        return self.cleaned_data.get("selector") or DEFAULT_SELECTOR

    def clean_model_kind(self) -> str:
        return self.cleaned_data.get("model_kind") or "vpl"

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if Study.objects.filter(name=name).exists():
            raise forms.ValidationError("A study with this name already exists.")
        return name


def import_upload_limit() -> int:
    """The largest upload accepted: the upload cap, and never more than the uncompressed cap (a file larger
    than that cannot be valid, compressed or not). The API and the page share it."""
    return min(settings.CHORUS_IMPORT_MAX_UPLOAD_BYTES, settings.CHORUS_IMPORT_MAX_BYTES)


class ImportForm(forms.Form):
    file = forms.FileField(
        label="File",
        help_text="JSONL or CSV, optionally gzip-compressed (.gz).",
        widget=forms.ClearableFileInput(attrs={"accept": ".jsonl,.json,.ndjson,.csv,.gz"}),
    )
    allow_duplicates = forms.BooleanField(
        required=False,
        label="Import rows that are already in the study anyway",
        help_text="Only after a warning: rows with the same conversation and responses are then stored again.",
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        # Compressed files are checked again after decompression by the importer.
        limit = import_upload_limit()
        if upload.size > limit:
            raise forms.ValidationError(f"The file is larger than {limit} bytes.")
        return upload


class StudyStatusForm(forms.Form):
    status = forms.ChoiceField(
        choices=[(s.value, s.label) for s in (Study.Status.ACTIVE, Study.Status.PAUSED, Study.Status.CLOSED)]
    )
