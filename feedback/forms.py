"""The annotator profile form, built from feedback.profile_schema (the single source of truth).

Every question has an explicit "Prefer not to say": choice questions offer it as their last option,
the others (multi-select, each slider, free text) carry a `<name>__prefer_not` checkbox. The form only
turns the POST into the shape `clean_profile` expects; the domain validation itself happens in
services.profile_update, whose ProfileError the view maps back onto the questions.

Sliders: every slider submits its value (default 50), so a slider the person never touched is stored
as 50. We do not try to guess "touched" client-side; the dashboard flags annotators whose sliders
were all left at the default 50 instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django import forms

from feedback.profile_schema import ALL_FIELD_NAMES, FIELDS_BY_NAME, PREFER_NOT, ProfileField

PREFER_NOT_LABEL = "Prefer not to say"
SLIDER_DEFAULT = 50
# Choice questions with more options than this use a <select> (the country lists) instead of radios.
MAX_RADIOS = 12
SEP = "__"


class RangeInput(forms.NumberInput):
    input_type = "range"


def _prefer_not_field() -> forms.BooleanField:
    return forms.BooleanField(required=False, label=PREFER_NOT_LABEL)


@dataclass
class Question:
    """One question as the template renders it: the schema entry plus its bound form fields."""

    spec: ProfileField
    main: forms.BoundField | None = None  # choice / multi / text
    prefer_not: forms.BoundField | None = None  # multi / text
    # sliders: (code, label, value field, prefer-not field)
    sliders: list[tuple[str, str, forms.BoundField, forms.BoundField]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        if self.spec.kind == "choice" and len(self.spec.choices) > MAX_RADIOS:
            return "select"
        return self.spec.kind


class ProfileForm(forms.Form):
    def __init__(self, *args: Any, fields: list[str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Schema order, whatever order the study lists its fields in.
        self.specs = [FIELDS_BY_NAME[name] for name in ALL_FIELD_NAMES if name in fields]
        self.group_errors: dict[str, list[str]] = {}
        self.profile_data: dict[str, Any] = {}
        for spec in self.specs:
            name = spec.name
            if spec.kind == "choice":
                choices = [*spec.choices, (PREFER_NOT, PREFER_NOT_LABEL)]
                if len(spec.choices) > MAX_RADIOS:
                    widget: type[forms.Widget] = forms.Select
                    choices = [("", "Choose…"), *choices]
                else:
                    widget = forms.RadioSelect
                self.fields[name] = forms.ChoiceField(
                    label=spec.label,
                    choices=choices,
                    widget=widget,
                    error_messages={"required": f"Please choose an answer (or “{PREFER_NOT_LABEL}”)."},
                )
            elif spec.kind == "multi":
                self.fields[name] = forms.MultipleChoiceField(
                    label=spec.label, choices=spec.choices, widget=forms.CheckboxSelectMultiple, required=False
                )
                self.fields[name + SEP + "prefer_not"] = _prefer_not_field()
            elif spec.kind == "sliders":
                for code, label in spec.choices:
                    self.fields[name + SEP + code] = forms.IntegerField(
                        label=label,
                        min_value=1,
                        max_value=100,
                        initial=SLIDER_DEFAULT,
                        required=False,
                        widget=RangeInput(attrs={"min": 1, "max": 100, "step": 1}),
                    )
                    self.fields[name + SEP + code + SEP + "prefer_not"] = _prefer_not_field()
            elif spec.kind == "text":
                self.fields[name] = forms.CharField(
                    label=spec.label,
                    required=False,
                    max_length=spec.max_length,
                    widget=forms.Textarea(attrs={"rows": 3}),
                )
                self.fields[name + SEP + "prefer_not"] = _prefer_not_field()

    @classmethod
    def initial_from_profile(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Stored answers (Profile.data) back into form initial values, so a revisit shows them."""
        initial: dict[str, Any] = {}
        for name, value in data.items():
            spec = FIELDS_BY_NAME.get(name)
            if spec is None:
                continue
            if spec.kind == "choice":
                initial[name] = value
            elif spec.kind in ("multi", "text"):
                if value == PREFER_NOT:
                    initial[name + SEP + "prefer_not"] = True
                else:
                    initial[name] = value
            elif spec.kind == "sliders" and isinstance(value, dict):
                for code, rating in value.items():
                    if rating == PREFER_NOT:
                        initial[name + SEP + code + SEP + "prefer_not"] = True
                    else:
                        initial[name + SEP + code] = rating
        return initial

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        data: dict[str, Any] = {}
        for spec in self.specs:
            name = spec.name
            if spec.kind == "choice":
                if cleaned.get(name):
                    data[name] = cleaned[name]
            elif spec.kind == "multi":
                if cleaned.get(name + SEP + "prefer_not"):
                    data[name] = PREFER_NOT
                elif cleaned.get(name):
                    data[name] = list(cleaned[name])
                elif name not in self.errors:
                    self.add_error(name, f"Choose at least one answer (or “{PREFER_NOT_LABEL}”).")
            elif spec.kind == "sliders":
                ratings: dict[str, Any] = {}
                for code, _ in spec.choices:
                    key = name + SEP + code
                    if cleaned.get(key + SEP + "prefer_not"):
                        ratings[code] = PREFER_NOT
                    elif cleaned.get(key) is not None:
                        ratings[code] = cleaned[key]
                    elif key not in self.errors:
                        self.add_error(key, f"Set the slider (or tick “{PREFER_NOT_LABEL}”).")
                data[name] = ratings
            elif spec.kind == "text":
                if cleaned.get(name + SEP + "prefer_not"):
                    data[name] = PREFER_NOT
                elif cleaned.get(name):
                    data[name] = cleaned[name]
        self.profile_data = data
        return cleaned

    def add_profile_errors(self, errors: dict[str, str]) -> None:
        """Attach a ProfileError's messages (keyed by schema field name) to their questions."""
        for name, message in errors.items():
            self.group_errors.setdefault(name, []).append(message)
        if any(name not in self.fields_by_spec for name in errors):
            self.add_error(None, "Some answers were not accepted; please check the highlighted questions.")

    @property
    def fields_by_spec(self) -> set[str]:
        return {spec.name for spec in self.specs}

    def questions(self) -> list[Question]:
        out: list[Question] = []
        for spec in self.specs:
            q = Question(spec=spec, errors=list(self.group_errors.get(spec.name, [])))
            if spec.kind == "sliders":
                for code, label in spec.choices:
                    value_bf, prefer_bf = self[spec.name + SEP + code], self[spec.name + SEP + code + SEP + "prefer_not"]
                    q.sliders.append((code, label, value_bf, prefer_bf))
                    q.errors += [str(e) for e in value_bf.errors]
            else:
                q.main = self[spec.name]
                q.errors += [str(e) for e in q.main.errors]
                if spec.kind in ("multi", "text"):
                    q.prefer_not = self[spec.name + SEP + "prefer_not"]
            out.append(q)
        return out


# The compare page's choices as the annotator sees them (left/right on screen, not a/b of the pair).
SCREEN_CHOICES = ("left", "right", "tie", "bad")
# Longer than a day on one pair is not a measurement; such values fall back to the server's clock.
MAX_TIME_MS = 86_400_000
_NOT_VALID = "Something in this form was not valid; please try again."
_STRENGTH_RANGE = "The preference strength must be between 1 and 100."


class JudgmentForm(forms.Form):
    """The compare page's posted judgment, parsed in one place (the API has JudgmentCreateSerializer).

    Each message is what the annotator sees above the pair; `first_error()` picks the one to show in the
    order the fields matter. The services re-check every value for all callers.
    """

    client_key = forms.CharField(max_length=64, error_messages={
        "required": "This form is out of date; please try again.",
        "max_length": "This form is out of date; please try again."})
    choice = forms.ChoiceField(choices=[(c, c) for c in SCREEN_CHOICES], error_messages={
        "required": "Choose the left response, the right one, a tie, or “both are bad”.",
        "invalid_choice": "Choose the left response, the right one, a tie, or “both are bad”."})
    pair = forms.IntegerField(error_messages={"required": _NOT_VALID, "invalid": _NOT_VALID})
    strength = forms.IntegerField(required=False, error_messages={
        "invalid": _NOT_VALID, "min_value": _STRENGTH_RANGE, "max_value": _STRENGTH_RANGE},
        min_value=1, max_value=100)
    # compare.js posts "0" while the slider was never touched: then there is no strength, not its starting 50.
    strength_moved = forms.CharField(required=False)
    # Lenient on purpose: without JavaScript (or with a bogus value) the view uses the server's clock.
    time_ms = forms.CharField(required=False)
    # Not stripped: the service applies the one length rule; browsers send a newline as CRLF.
    rationale = forms.CharField(required=False, strip=False)

    def clean_strength(self) -> int | None:
        strength = self.cleaned_data.get("strength")
        return None if self.data.get("strength_moved") == "0" else strength

    def clean_time_ms(self) -> int | None:
        raw = (self.cleaned_data.get("time_ms") or "").strip()
        try:
            value = int(raw)
        except ValueError:
            return None
        return value if 0 <= value <= MAX_TIME_MS else None

    def clean_rationale(self) -> str:
        return self.cleaned_data.get("rationale", "").replace("\r\n", "\n")

    def first_error(self) -> str:
        for name in ("client_key", "choice", "pair", "strength"):
            if name in self.errors:
                return str(self.errors[name][0])
        return _NOT_VALID
