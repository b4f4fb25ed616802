"""The annotator profile: PRISM's survey (Kirk et al. 2024), field names and codes kept so data lines up.

Every question can be answered "prefer not to say" (stored as PREFER_NOT). A study picks which fields
it asks (Study.profile_fields); this module is the single source of truth for labels and choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from feedback.validation import text_problem

PREFER_NOT = "prefer-not-to-say"

# PRISM's eight stated-preference attributes, each rated on a 1–100 slider.
STATED_PREFS: list[tuple[str, str]] = [
    ("values", "It reflects my values and cultural perspectives"),
    ("creativity", "It produces creative and inspiring content"),
    ("fluency", "It produces fluent, well-written responses"),
    ("factuality", "It gives factual, accurate information"),
    ("diversity", "It summarises multiple viewpoints or different worldviews"),
    ("safety", "It refuses to produce harmful, offensive or unsafe content"),
    ("personalisation", "It is personalised to me, learning from past conversations"),
    ("helpfulness", "It is helpful, directly answering my request"),
]

COUNTRIES: list[tuple[str, str]] = [
    ("AR", "Argentina"), ("AU", "Australia"), ("AT", "Austria"), ("BD", "Bangladesh"), ("BE", "Belgium"),
    ("BR", "Brazil"), ("CA", "Canada"), ("CL", "Chile"), ("CN", "China"), ("CO", "Colombia"),
    ("CZ", "Czechia"), ("DK", "Denmark"), ("EG", "Egypt"), ("ET", "Ethiopia"), ("FI", "Finland"),
    ("FR", "France"), ("DE", "Germany"), ("GH", "Ghana"), ("GR", "Greece"), ("HU", "Hungary"),
    ("IN", "India"), ("ID", "Indonesia"), ("IR", "Iran"), ("IE", "Ireland"), ("IL", "Israel"),
    ("IT", "Italy"), ("JP", "Japan"), ("KE", "Kenya"), ("KR", "South Korea"), ("MY", "Malaysia"),
    ("MX", "Mexico"), ("MA", "Morocco"), ("NL", "Netherlands"), ("NZ", "New Zealand"), ("NG", "Nigeria"),
    ("NO", "Norway"), ("PK", "Pakistan"), ("PE", "Peru"), ("PH", "Philippines"), ("PL", "Poland"),
    ("PT", "Portugal"), ("RO", "Romania"), ("RU", "Russia"), ("SA", "Saudi Arabia"), ("ZA", "South Africa"),
    ("ES", "Spain"), ("SE", "Sweden"), ("CH", "Switzerland"), ("TW", "Taiwan"), ("TH", "Thailand"),
    ("TR", "Turkey"), ("UA", "Ukraine"), ("AE", "United Arab Emirates"), ("GB", "United Kingdom"),
    ("US", "United States"), ("VN", "Vietnam"), ("ZW", "Zimbabwe"), ("OTHER", "Another country"),
]


@dataclass(frozen=True)
class ProfileField:
    name: str  # PRISM's field name, also the key in Profile.data and in exports
    label: str  # the question as shown to annotators
    kind: str  # "choice" | "multi" | "sliders" | "text"
    choices: list[tuple[str, str]] = field(default_factory=list)  # (code, label)
    max_length: int = 0  # for "text"

    @property
    def codes(self) -> set[str]:
        return {code for code, _ in self.choices}


FIELDS: list[ProfileField] = [
    ProfileField("lm_familiarity", "How familiar are you with AI language models (chatbots)?", "choice", [
        ("very-familiar", "Very familiar"), ("somewhat-familiar", "Somewhat familiar"),
        ("not-very-familiar", "Not very familiar"), ("not-familiar", "Not familiar at all"),
    ]),
    ProfileField("lm_frequency_use", "How often do you use AI language models?", "choice", [
        ("every-day", "Every day"), ("every-week", "Every week"), ("every-month", "Every month"),
        ("less-than-monthly", "Less than once a month"), ("never", "Never"),
    ]),
    ProfileField("lm_usecases", "What do you use them for? (choose all that apply)", "multi", [
        ("research", "Research and overviews of topics"), ("professional", "Professional work"),
        ("technical", "Technical or programming help"), ("source-suggestions", "Source suggestions"),
        ("creative-writing", "Creative writing"), ("lifestyle", "Lifestyle and hobbies"),
        ("casual-conversation", "Casual conversation"), ("emotional-support", "Emotional support"),
        ("relationship-advice", "Relationship advice"), ("medical-guidance", "Medical guidance"),
        ("financial-guidance", "Financial guidance"), ("other", "Something else"),
    ]),
    ProfileField("stated_prefs", "How important is it to you that an AI model's response…", "sliders",
                 STATED_PREFS),
    ProfileField("age", "Age", "choice", [
        ("18-24", "18–24"), ("25-34", "25–34"), ("35-44", "35–44"), ("45-54", "45–54"),
        ("55-64", "55–64"), ("65+", "65 or older"),
    ]),
    ProfileField("gender", "Gender", "choice", [
        ("male", "Male"), ("female", "Female"), ("non-binary", "Non-binary / third gender"),
        ("other", "Self-described / other"),
    ]),
    ProfileField("employment_status", "Employment status", "choice", [
        ("full-time", "Working full-time"), ("part-time", "Working part-time"),
        ("unemployed-seeking", "Unemployed, seeking work"), ("unemployed-not-seeking", "Unemployed, not seeking work"),
        ("student", "Student"), ("retired", "Retired"), ("homemaker", "Homemaker / stay-at-home parent"),
        ("other", "Other"),
    ]),
    ProfileField("marital_status", "Marital status", "choice", [
        ("never-married", "Never been married"), ("married", "Married"),
        ("partnership", "In a civil partnership or cohabiting"), ("divorced-separated", "Divorced or separated"),
        ("widowed", "Widowed"), ("other", "Other"),
    ]),
    ProfileField("education", "Highest level of education", "choice", [
        ("some-secondary", "Some secondary education"), ("completed-secondary", "Completed secondary school"),
        ("vocational", "Vocational or technical qualification"), ("some-university", "Some university, no degree"),
        ("bachelors", "University bachelor's degree"), ("graduate", "Graduate or professional degree"),
        ("other", "Other"),
    ]),
    ProfileField("english_proficiency", "English proficiency", "choice", [
        ("native", "Native speaker"), ("fluent", "Fluent"), ("advanced", "Advanced"),
        ("intermediate", "Intermediate"), ("basic", "Basic"),
    ]),
    ProfileField("reside_country", "Country of residence", "choice", COUNTRIES),
    ProfileField("birth_country", "Country of birth", "choice", COUNTRIES),
    ProfileField("ethnicity", "Ethnicity", "choice", [
        ("asian", "Asian"), ("black", "Black / African"), ("hispanic-latino", "Hispanic / Latino"),
        ("middle-eastern", "Middle Eastern / North African"), ("mixed", "Mixed"),
        ("indigenous", "Indigenous"), ("white", "White"), ("other", "Other"),
    ]),
    ProfileField("religion", "Religion", "choice", [
        ("none", "No religion"), ("christian", "Christian"), ("muslim", "Muslim"), ("hindu", "Hindu"),
        ("buddhist", "Buddhist"), ("jewish", "Jewish"), ("sikh", "Sikh"), ("spiritual", "Spiritual, not religious"),
        ("other", "Other"),
    ]),
    ProfileField("self_description", "Briefly describe yourself (optional, a sentence or two)", "text",
                 max_length=1000),
]

FIELDS_BY_NAME: dict[str, ProfileField] = {f.name: f for f in FIELDS}
ALL_FIELD_NAMES: list[str] = [f.name for f in FIELDS]


class ProfileError(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def clean_profile(data: dict[str, Any], *, allowed: list[str]) -> dict[str, Any]:
    """Validate a submitted profile against the fields a study asks; unknown fields are an error.

    A missing field means "not answered yet"; PREFER_NOT is an explicit skip.
    """
    errors: dict[str, str] = {}
    cleaned: dict[str, Any] = {}
    for name, value in data.items():
        spec = FIELDS_BY_NAME.get(name)
        if spec is None or name not in allowed:
            errors[name] = "this study does not ask this question"
            continue
        if value is None:
            continue
        if value == PREFER_NOT:
            cleaned[name] = PREFER_NOT
            continue
        if spec.kind == "choice":
            if not isinstance(value, str) or value not in spec.codes:
                errors[name] = f"must be one of {sorted(spec.codes | {PREFER_NOT})}"
            else:
                cleaned[name] = value
        elif spec.kind == "multi":
            if not isinstance(value, list) or not all(isinstance(v, str) and v in spec.codes for v in value):
                errors[name] = f"must be a list drawn from {sorted(spec.codes)}"
            else:
                cleaned[name] = sorted(set(value))
        elif spec.kind == "sliders":
            if not isinstance(value, dict):
                errors[name] = "must be an object of slider ratings 1–100"
                continue
            out: dict[str, int | str] = {}
            for key, rating in value.items():
                if key not in spec.codes:
                    errors[name] = f"unknown attribute {key!r}"
                    break
                if rating == PREFER_NOT or rating is None:
                    out[key] = PREFER_NOT
                elif isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 100:
                    errors[name] = f"{key} must be an integer from 1 to 100"
                    break
                else:
                    out[key] = rating
            else:
                cleaned[name] = out
        elif spec.kind == "text":
            if not isinstance(value, str) or len(value) > spec.max_length:
                errors[name] = f"must be text of at most {spec.max_length} characters"
            elif problem := text_problem(value):
                errors[name] = problem
            else:
                cleaned[name] = value.strip()
    if errors:
        raise ProfileError(errors)
    return cleaned


def group_value(data: dict[str, Any], field_name: str) -> str:
    """The group an annotator falls in for a profile field (dashboards slice by this).

    Sliders group as `stated_prefs.<attr>` buckets (1–33 low, 34–66 mid, 67–100 high).
    """
    if field_name.startswith("stated_prefs."):
        rating = (data.get("stated_prefs") or {}).get(field_name.split(".", 1)[1])
        if not isinstance(rating, int):
            return "unanswered" if rating is None else PREFER_NOT
        return "low" if rating <= 33 else "mid" if rating <= 66 else "high"
    value = data.get(field_name)
    if value is None or value == "":
        return "unanswered"
    if isinstance(value, list):
        return ",".join(value) or "none"
    return str(value)


def groupable_fields() -> list[str]:
    names = [f.name for f in FIELDS if f.kind in ("choice", "multi")]
    names += [f"stated_prefs.{code}" for code, _ in STATED_PREFS]
    return names
