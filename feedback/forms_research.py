"""Forms of the researcher pages; they only validate input — writes go through feedback.services."""

from __future__ import annotations

from django import forms
from django.conf import settings

from feedback.models import Study
from feedback.profile_schema import ALL_FIELD_NAMES, FIELDS


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
    overlap_target = forms.IntegerField(
        min_value=1, max_value=1000, initial=3, help_text="Judgments wanted per pair."
    )
    pairs_per_annotator = forms.IntegerField(
        min_value=1, max_value=10_000, initial=10, help_text="Pairs each annotator labels."
    )
    completion_url = forms.URLField(
        required=False,
        assume_scheme="https",
        label="Completion URL",
        help_text="Crowd-platform return link; {code} is replaced by the annotator's completion code.",
    )

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
