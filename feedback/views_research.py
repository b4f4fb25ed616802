"""Researcher pages: study list, creation, the study page (live counts, join link) and file import.

Every page needs a login; study pages are `@researcher_study_required` (feedback.decorators: login, 404 /
403, the view gets the study), creating a study needs `selectors.is_researcher`. Writes go through
feedback.services, reads through selectors.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_htmx.middleware import HtmxDetails

from feedback import selectors, services
from feedback.decorators import researcher_study_required
from feedback.forms_research import (
    SETTINGS_FIELDS,
    ImportForm,
    StudyCreateForm,
    StudySettingsForm,
    StudyStatusForm,
)
from feedback.importers import ImportFileError
from feedback.models import Annotator, Study


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


RECENT_JUDGMENTS = 20
STATUS_BUTTONS = [
    (Study.Status.ACTIVE, "Activate"),
    (Study.Status.PAUSED, "Pause"),
    (Study.Status.CLOSED, "Close"),
]

# Shown on the import page: one example line per accepted form.
IMPORT_EXAMPLES = [
    (
        "trl",
        "TRL preference pairs",
        'A prompt and two responses, "chosen" and "rejected" (the dataset\'s own label is kept for '
        "reference). The prompt may also be a list of chat messages ending with a user turn; optional "
        '"chosen_model", "rejected_model" and "metadata".',
        '{"prompt": "How do I boil an egg?", "chosen": "Simmer it for 9 minutes.", '
        '"rejected": "Put it in the microwave.", "chosen_model": "model-a", "rejected_model": "model-b"}',
    ),
    (
        "responses",
        "Several responses per prompt",
        'A prompt and 2 or more responses, each with "text" and optional "model" and "metadata"; every '
        "two responses of a prompt make a pair. In CSV, use response_1/model_1, response_2/model_2, … "
        "columns.",
        '{"prompt": "Write a haiku about rain.", "responses": [{"text": "Soft rain on the roof…", '
        '"model": "model-a"}, {"text": "Grey clouds gather…", "model": "model-b"}]}',
    ),
    (
        "hh",
        "Anthropic hh-rlhf",
        'Two whole dialogues, "chosen" and "rejected", in "\\n\\nHuman: … \\n\\nAssistant: …" form; the '
        "shared conversation becomes the prompt and the final assistant turns the two responses.",
        r'{"chosen": "\n\nHuman: Hi!\n\nAssistant: Hello, how can I help?", '
        r'"rejected": "\n\nHuman: Hi!\n\nAssistant: What?"}',
    ),
]


def _forbid_annotators(request: HttpRequest) -> None:
    # Annotator accounts (one per join) never see the researcher area.
    if selectors.annotator_for_user(request.user) is not None:
        raise PermissionDenied("annotator accounts have no access to researcher pages")


def _prolific_url(study: Study) -> str:
    # Prolific substitutes {{%PROLIFIC_PID%}} with the participant's id when it sends them.
    return selectors.join_url(study) + "?pid={{%PROLIFIC_PID%}}"


@login_required
def study_list(request: HttpRequest) -> HttpResponse:
    _forbid_annotators(request)
    studies = list(selectors.study_list_for_user(request.user))
    rows = [(study, selectors.study_counts(study)) for study in studies]
    return render(
        request,
        "feedback/research/study_list.html",
        {"rows": rows, "can_create": selectors.is_researcher(request.user)},
    )


@login_required
@require_http_methods(["GET", "POST"])
def study_create(request: HttpRequest) -> HttpResponse:
    if not selectors.is_researcher(request.user):
        raise PermissionDenied("only researchers can create studies")
    form = StudyCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            study = services.study_create(
                name=data["name"],
                created_by=request.user,
                instructions=data["instructions"],
                consent_text=data["consent_text"],
                profile_fields=data["profile_fields"],
                overlap_target=data["overlap_target"],
                pairs_per_annotator=data["pairs_per_annotator"],
                completion_url=data["completion_url"],
                selector=data["selector"],
                model_kind=data["model_kind"],
                screenout_code=data["screenout_code"],
                retrain_every_judgments=data["retrain_every_judgments"],
                retrain_every_minutes=data["retrain_every_minutes"],
            )
        except services.ServiceError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Study “{study.name}” created. Now import the pairs to label.")
            return redirect("feedback:study_detail", pk=study.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "feedback/research/study_form.html", {"form": form}, status=status)


def _detail_context(study: Study) -> dict:
    return {"study": study, "counts": selectors.study_counts(study), "is_full": selectors.study_is_full(study)}


def _render_detail(
    request: HttpRequest, study: Study, *, settings_form: StudySettingsForm | None = None, status: int = 200
) -> HttpResponse:
    recent = selectors.study_recent_judgments(study, limit=RECENT_JUDGMENTS)
    context = {
        **_detail_context(study),
        "join_url": selectors.join_url(study),
        "prolific_url": _prolific_url(study),
        "status_buttons": STATUS_BUTTONS,
        "recent_judgments": recent,
        "import_form": ImportForm(),
        "settings_form": settings_form or StudySettingsForm.for_study(study),
    }
    return render(request, "feedback/research/study_detail.html", context, status=status)


@researcher_study_required
def study_detail(request: HtmxHttpRequest, study: Study) -> HttpResponse:
    if request.htmx:
        # The counts section polls this URL every few seconds.
        return render(request, "feedback/research/study_detail.html#counts", _detail_context(study))
    return _render_detail(request, study)


@researcher_study_required(methods=["POST"])
def study_settings(request: HttpRequest, study: Study) -> HttpResponse:
    """The settings card's form: every setting at once; errors re-render the page with the card open."""
    form = StudySettingsForm(request.POST)
    if form.is_valid():
        try:
            services.study_settings_update(study=study, **{k: form.cleaned_data[k] for k in SETTINGS_FIELDS})
        except services.ServiceError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Settings saved.")
            return redirect(reverse("feedback:study_detail", args=[study.pk]) + "#settings")
    study.refresh_from_db()
    return _render_detail(request, study, settings_form=form, status=400)


@researcher_study_required(methods=["POST"])
def annotator_exclusion(request: HttpRequest, study: Study, annotator_id: int) -> HttpResponse:
    """Exclude an annotator from training and exports, or include them again (the study page and dashboard)."""
    annotator = get_object_or_404(Annotator, pk=annotator_id, study=study)
    exclude = request.POST.get("action") == "exclude"
    if request.POST.get("action") not in ("exclude", "include"):
        messages.error(request, "Unknown action.")
    else:
        services.annotator_set_excluded(
            annotator=annotator, excluded=exclude, by=request.user, reason=request.POST.get("reason", "")
        )
        messages.success(
            request,
            f"{annotator.pseudonym} is {'excluded from' if exclude else 'included again in'} training and exports.",
        )
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("feedback:study_detail", args=[study.pk]) + "#recent"
    return redirect(back)


@researcher_study_required(methods=["POST"])
def study_status(request: HttpRequest, study: Study) -> HttpResponse:
    form = StudyStatusForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Unknown status.")
    else:
        services.study_set_status(study=study, status=form.cleaned_data["status"])
        messages.success(request, f"The study is now {Study.Status(study.status).label.lower()}.")
    return redirect("feedback:study_detail", pk=study.pk)


@researcher_study_required(methods=["GET", "POST"])
def study_import(request: HttpRequest, study: Study) -> HttpResponse:
    if request.method == "POST":
        form = ImportForm(request.POST, request.FILES)
    else:
        form = ImportForm()
    errors = []
    duplicate: services.DuplicateImport | None = None
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            # The upload is a (temporary) file: the importer streams it, never reading it whole.
            result = services.study_import(
                study=study, data=upload, filename=upload.name,
                allow_duplicates=form.cleaned_data["allow_duplicates"],
            )
        except ImportFileError as exc:
            errors = exc.errors
        except services.DuplicateImport as exc:
            duplicate = exc
        else:
            messages.success(
                request,
                f"Imported {result.pairs} pairs ({result.prompts} prompts, {result.candidates} responses, "
                f"{result.format} format) from {upload.name}.",
            )
            return redirect("feedback:study_detail", pk=study.pk)
    context = {
        "study": study,
        "form": form,
        "errors": errors,
        "duplicate": duplicate,
        "examples": IMPORT_EXAMPLES,
        "filename": getattr(request.FILES.get("file"), "name", ""),
    }
    return render(
        request,
        "feedback/research/study_import.html",
        context,
        status=(409 if duplicate else 400) if request.method == "POST" else 200,
    )
