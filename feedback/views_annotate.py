"""The annotator flow: join → consent → profile → compare (htmx) → completion code.

Every page after join opens with `_get_annotator`, which ties the session's user to the study in the
URL, then with `_step_redirect`, which keeps the steps in order. Writes go through feedback.services.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.http import HttpRequest as _HttpRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from feedback import selectors, services
from feedback.forms import MAX_TIME_MS, SCREEN_CHOICES, JudgmentForm, ProfileForm
from feedback.models import Annotator, Assignment, Judgment, Pair, Profile, Study
from feedback.profile_schema import PREFER_NOT, ProfileError


class HttpRequest(_HttpRequest):
    # HtmxMiddleware sets request.htmx; this tells type checkers (django-htmx's documented pattern).
    htmx: HtmxDetails


AUTH_BACKEND = "django.contrib.auth.backends.ModelBackend"
# Choices arrive in screen terms; the view maps them to the pair's a/b (see _screen_to_pair_choice).
# The per-dimension radio buttons (screen terms, as for the main choice).
DIMENSION_OPTIONS = [("left", "Response 1"), ("tie", "Same"), ("right", "Response 2"), ("bad", "Both bad")]
STEP_URL_NAMES = {
    "consent": "feedback:consent",
    "profile": "feedback:profile",
    "compare": "feedback:compare",
    "done": "feedback:done",
}
DEFAULT_CONSENT_TEXT = """\
You are invited to take part in a research study about how people judge responses written by AI
language models. You will read a conversation and two possible responses, and say which one you
prefer and how strongly.

- **What we collect:** your choices, optional comments, the time you take, and the short survey
  that follows. We do not ask for your name or contact details.
- **Content:** the responses were written by AI models and may occasionally be inaccurate or
  upsetting. You can stop at any time by closing this page.
- **Voluntary:** taking part is voluntary. If you decline, nothing beyond your visit is recorded.
- **Use of data:** your answers are stored under a pseudonym and used to study and improve AI
  models; they may be shared with other researchers in anonymised form.
"""


# --- access helpers ---------------------------------------------------------------------------------


def _get_annotator(request: HttpRequest, slug: str) -> Annotator | None:
    """The session user's annotator record for study `slug`, or None when they have not joined it.

    None (anonymous visitors, researchers) means "send them to the join page". An annotator of
    *another* study gets a 404: a session must never learn anything about other studies, and each
    join creates its own user, so there is no legitimate way for them to belong here.
    """
    annotator = selectors.annotator_for_user(request.user)
    if annotator is None:
        # An unknown study is a 404, not a redirect to a join page that would 404 anyway.
        get_object_or_404(Study, slug=slug)
        return None
    if annotator.study.slug != slug:
        raise Http404("No such study.")
    return annotator


def _current_step(annotator: Annotator) -> str:
    # Done wins over everything: a finished annotator only ever sees their completion code.
    if annotator.completed_at is not None:
        return "done"
    if annotator.consented_at is None:
        return "consent"
    if annotator.profile_completed_at is None and annotator.study.profile_fields:
        return "profile"
    return "compare"


def _step_url(annotator: Annotator, step: str | None = None) -> str:
    step = step or _current_step(annotator)
    if step == "compare" and annotator.study.is_conversation():
        return reverse("feedback:talk", args=[annotator.study.slug])  # live conversations (issue 12)
    if step == "compare" and annotator.study.is_ratings():
        return reverse("feedback:rate", args=[annotator.study.slug])  # 1-100 ratings (issue 12)
    return reverse(STEP_URL_NAMES[step], args=[annotator.study.slug])


def _step_redirect(request: HttpRequest, annotator: Annotator, here: str) -> HttpResponse | None:
    """A redirect to the annotator's current step when it is not `here`; None to carry on."""
    step = _current_step(annotator)
    if step == here:
        return None
    url = _step_url(annotator, step)
    # htmx follows a plain 302 inside the swap; HX-Redirect makes it load the whole page instead.
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _study_full(request: HttpRequest, study: Study) -> HttpResponse:
    """Every pair is at its overlap target: no completion code, only the study's screen-out return link."""
    return_url = ""
    if study.completion_url and study.screenout_code:
        return_url = study.completion_url.replace("{code}", study.screenout_code)
    context = {"study": study, "return_url": return_url, "screenout_code": study.screenout_code}
    return render(request, "feedback/annotate/full.html", context, status=403)


def _join_redirect(study_slug: str) -> HttpResponse:
    return redirect("feedback:join", slug=study_slug)


def _external_id(params: Any) -> str:
    # Prolific sends PROLIFIC_PID (and STUDY_ID / SESSION_ID, which we do not need); others send pid.
    # Not cut to length: the join refuses an over-long id with a message (the API's rule too).
    return (params.get("pid") or params.get("PROLIFIC_PID") or "").strip()


# --- join / consent / profile -----------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def join(request: HttpRequest, slug: str) -> HttpResponse:
    """GET explains the study and shows Start (no side effects); POST creates or resumes the annotator."""
    study = get_object_or_404(Study, slug=slug)
    pid = _external_id(request.POST if request.method == "POST" else request.GET) or _external_id(request.GET)
    current = selectors.annotator_for_user(request.user)
    # Already an annotator of this study (and not a different crowd id on a shared browser): resume.
    if current is not None and current.study_id == study.pk and (not pid or pid == current.external_id):
        return redirect(_step_url(current))
    if not study.is_open():
        return render(request, "feedback/annotate/closed.html", {"study": study}, status=403)
    # Before consent and the profile: a full study must not take a worker's time (or pay a code).
    if selectors.study_full_for_new_worker(study, external_id=pid):
        return _study_full(request, study)
    if request.method == "POST":
        return _join_post(request, study, pid)
    if pid and not _may_resume(request, study, pid):
        # Say so before Start: this crowd id joined from another browser and this one cannot prove it.
        return _resume_refused(request, study, str(services.ResumeRefused()))
    is_staff_session = request.user.is_authenticated and current is None
    context = {"study": study, "pid": pid, "logged_in_as": request.user if is_staff_session else None}
    return render(request, "feedback/annotate/join.html", context)


def _join_post(request: HttpRequest, study: Study, pid: str) -> HttpResponse:
    try:
        annotator, created = services.annotator_join(
            study=study, external_id=pid, resume_secret=_resume_cookie(request, study)
        )
    except services.ResumeRefused as exc:
        return _resume_refused(request, study, str(exc))
    except services.ServiceError as exc:
        if exc.code == "invalid":  # e.g. an over-long participant id
            return HttpResponseBadRequest(f"This link is not valid: {exc}.", content_type="text/plain; charset=utf-8")
        # Closed between GET and POST.
        return render(request, "feedback/annotate/closed.html", {"study": study}, status=403)
    return _log_in_annotator(request, annotator, new_secret=created)


def _log_in_annotator(request: HttpRequest, annotator: Annotator, *, new_secret: bool) -> HttpResponse:
    # login() flushes the previous session when the user changes, so a researcher who pressed
    # Start is logged out of their account here (the join page warned them).
    login(request, annotator.user, backend=AUTH_BACKEND)
    response = redirect(_step_url(annotator))
    if new_secret:
        secret = services.annotator_resume_secret_issue(annotator=annotator)
        _set_resume_cookie(response, annotator.study, secret)
    return response


# --- resume proof -----------------------------------------------------------------------------------
# The browser that first joined keeps a resume secret in a signed, HttpOnly cookie (only its hash is
# stored). It outlives the session, so a participant whose session expired resumes in the same browser;
# another browser that only knows the crowd id is refused and told to use a resume link.

RESUME_COOKIE_SALT = "chorus.resume-cookie"


def _resume_cookie_name(study: Study) -> str:
    return f"chorus_resume_{study.pk}"


def _resume_cookie(request: HttpRequest, study: Study) -> str:
    return request.get_signed_cookie(
        _resume_cookie_name(study), default="", salt=RESUME_COOKIE_SALT,
        max_age=settings.CHORUS_RESUME_COOKIE_MAX_AGE_SECONDS,
    ) or ""


def _set_resume_cookie(response: HttpResponse, study: Study, secret: str) -> None:
    response.set_signed_cookie(
        _resume_cookie_name(study), secret, salt=RESUME_COOKIE_SALT,
        max_age=settings.CHORUS_RESUME_COOKIE_MAX_AGE_SECONDS, path=f"/s/{study.slug}/",
        httponly=True, samesite="Lax", secure=settings.SESSION_COOKIE_SECURE,
    )


def _may_resume(request: HttpRequest, study: Study, pid: str) -> bool:
    """True when `pid` is new to the study or this browser holds its resume secret."""
    existing = Annotator.objects.filter(study=study, external_id=pid).only("resume_secret_hash").first()
    return existing is None or existing.resume_secret_matches(_resume_cookie(request, study))


def _resume_refused(request: HttpRequest, study: Study, message: str) -> HttpResponse:
    return render(request, "feedback/annotate/resume_refused.html", {"study": study, "message": message}, status=403)


@require_http_methods(["GET"])
def resume(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    """A per-participant resume link (signed, expiring, single use): log this browser in as that annotator."""
    study = get_object_or_404(Study, slug=slug)
    try:
        annotator = services.annotator_from_resume_link(study=study, token=token)
    except services.ServiceError as exc:
        return _resume_refused(request, study, str(exc))
    # A new secret for this browser; it also revokes the link.
    return _log_in_annotator(request, annotator, new_secret=True)


@require_http_methods(["GET", "POST"])
def consent(request: HttpRequest, slug: str) -> HttpResponse:
    annotator = _get_annotator(request, slug)
    if annotator is None:
        return _join_redirect(slug)
    study = annotator.study
    if response := _step_redirect(request, annotator, "consent"):
        return response
    if request.method == "POST" and request.POST.get("decision") == "decline":
        # Declining stores nothing beyond the join itself; they may still change their mind.
        return render(request, "feedback/annotate/declined.html", {"study": study})
    if request.method == "POST":
        if request.POST.get("decision") != "agree":
            return HttpResponseBadRequest("Unknown decision.")
        services.annotator_consent(annotator=annotator)
        return redirect(_step_url(annotator))
    context = {"study": study, "consent_text": study.consent_text or DEFAULT_CONSENT_TEXT}
    return render(request, "feedback/annotate/consent.html", context)


@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest, slug: str) -> HttpResponse:
    annotator = _get_annotator(request, slug)
    if annotator is None:
        return _join_redirect(slug)
    if response := _step_redirect(request, annotator, "profile"):
        return response
    study = annotator.study
    status = 200
    if request.method == "POST":
        form = ProfileForm(request.POST, fields=study.profile_fields)
        if form.is_valid():
            try:
                services.profile_update(annotator=annotator, data=form.profile_data)
            except ProfileError as exc:
                form.add_profile_errors(exc.errors)
            else:
                return redirect(_step_url(annotator))
        status = 400
    else:
        stored = Profile.objects.filter(annotator=annotator).values_list("data", flat=True).first() or {}
        form = ProfileForm(initial=ProfileForm.initial_from_profile(stored), fields=study.profile_fields)
    context = {"study": study, "form": form, "questions": form.questions(), "PREFER_NOT": PREFER_NOT}
    return render(request, "feedback/annotate/profile.html", context, status=status)


# --- compare ----------------------------------------------------------------------------------------


def _screen_to_pair_choice(screen_choice: str, shown_order: str) -> str:
    """left/right/tie as clicked → the pair's a/b/tie, given which candidate was on the left."""
    if screen_choice == "tie":
        return Judgment.Choice.TIE
    if screen_choice == "bad":
        return Judgment.Choice.BOTH_BAD
    a_on_left = shown_order == Assignment.Order.AB
    return Judgment.Choice.A if (screen_choice == "left") == a_on_left else Judgment.Choice.B


def _parse_int(raw: str | None) -> int | None:
    """An int, None for blank; raises ValueError for anything else."""
    if raw is None or raw.strip() == "":
        return None
    return int(raw.strip())


def _finished(request: HttpRequest, annotator: Annotator) -> HttpResponse:
    services.annotator_finish(annotator=annotator)
    url = _step_url(annotator, "done")
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _render_comparison(
    request: HttpRequest, annotator: Annotator, assignment: Assignment, *, error: str = "", status: int = 200
) -> HttpResponse:
    left, right = assignment.left_right()
    done, quota = selectors.annotator_progress(annotator)
    context = {
        "study": annotator.study,
        "assignment": assignment,
        "prompt": assignment.pair.prompt,
        "left": left,
        "right": right,
        "done": done,
        "quota": quota,
        "position": min(done + 1, quota),
        "percent": round(100 * done / quota) if quota else 100,
        # A fresh key per rendered form: a double click or a retried request stores one judgment.
        "client_key": uuid.uuid4().hex,
        "error": error,
        "dimension_options": DIMENSION_OPTIONS,
    }
    template = "feedback/annotate/compare.html"
    if request.htmx:
        template += "#comparison"
    return render(request, template, context, status=status)


@require_http_methods(["GET", "POST"])
def compare(request: HttpRequest, slug: str) -> HttpResponse:
    annotator = _get_annotator(request, slug)
    if annotator is None:
        return HttpResponseClientRedirect(reverse("feedback:join", args=[slug])) if request.htmx else _join_redirect(slug)
    if response := _step_redirect(request, annotator, "compare"):
        return response
    if annotator.study.is_conversation() or annotator.study.is_ratings():
        url = _step_url(annotator)
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    if request.method == "POST":
        response = _submit_judgment(request, annotator)
        if response is not None:
            return response
        if not request.htmx:
            # Post/redirect/get without JavaScript: a reload never resubmits.
            return redirect(_step_url(annotator, "compare"))
    assignment, n_done = services.assignment_next_with_progress(annotator=annotator)
    if assignment is None:
        if annotator.study.status == Study.Status.PAUSED:
            return _paused(request, annotator)
        if n_done == 0:
            # Filled up between their join and their first pair: no code for nothing labelled.
            if request.htmx:
                return HttpResponseClientRedirect(_step_url(annotator, "compare"))
            return _study_full(request, annotator.study)
        return _finished(request, annotator)
    return _render_comparison(request, annotator, assignment)


def _paused(request: HttpRequest, annotator: Annotator) -> HttpResponse:
    # Paused mid-task: an htmx swap would draw the whole page inside the compare area, so load it instead.
    if request.htmx:
        return HttpResponseClientRedirect(_step_url(annotator, "compare"))
    return render(request, "feedback/annotate/paused.html", {"study": annotator.study})


def _submit_judgment(request: HttpRequest, annotator: Annotator) -> HttpResponse | None:
    """Store the posted judgment; None on success (or an idempotent retry), else an error response."""
    post = request.POST
    form = JudgmentForm(post)
    valid = form.is_valid()
    if "client_key" in form.errors:
        return _judgment_error(request, annotator, form.first_error())
    client_key = form.cleaned_data["client_key"]
    # A retry of a judgment we already stored (double click, network retry): carry on to the next pair.
    if Judgment.objects.filter(annotator=annotator, client_key=client_key).exists():
        return None
    if not valid:
        return _judgment_error(request, annotator, form.first_error())
    data = form.cleaned_data
    screen_choice, strength, pair_id = data["choice"], data["strength"], data["pair"]
    # Only pairs of the annotator's own study exist for them.
    pair = Pair.objects.filter(id=pair_id, study_id=annotator.study_id).first()
    if pair is None:
        raise Http404("No such pair.")
    assignment = (
        Assignment.objects.filter(annotator=annotator, pair=pair, completed_at__isnull=True, released_at__isnull=True)
        .order_by("id")
        .first()
    )
    if assignment is None:
        return _judgment_error(request, annotator, "That pair is no longer assigned to you; here is your current one.")
    time_ms = data["time_ms"]
    if time_ms is None:
        # No JavaScript (or a bogus value): fall back to the time since the pair was assigned.
        elapsed = (timezone.now() - assignment.assigned_at).total_seconds() * 1000
        time_ms = min(max(int(elapsed), 0), MAX_TIME_MS)
    try:
        services.judgment_create(
            annotator=annotator,
            pair=pair,
            choice=_screen_to_pair_choice(screen_choice, assignment.shown_order),
            client_key=client_key,
            strength=strength,
            # The same rule as the API: over-long text is refused with a message, never cut. Browsers send a
            # newline as CRLF but count it as one character against the textarea's maxlength.
            rationale=data["rationale"],
            time_ms=time_ms,
            dimensions=_posted_dimensions(post, annotator.study, assignment.shown_order),
        )
    except services.ServiceError as exc:
        if exc.code == "not_found":
            raise Http404(str(exc)) from exc
        return _judgment_error(request, annotator, str(exc))
    return None


def _posted_dimensions_screen(post: Any, study: Study) -> dict[str, str]:
    """The per-attribute choices as posted (`dim_<attribute>` = left/right/tie/bad), unanswered left out."""
    return {name: post.get(f"dim_{name}") for name in study.attributes or [] if post.get(f"dim_{name}") in SCREEN_CHOICES}


def _posted_dimensions(post: Any, study: Study, shown_order: str) -> dict[str, str]:
    """The per-attribute choices (`dim_<attribute>` = left/right/tie/bad) in the pair's terms."""
    out = {}
    for name in study.attributes or []:
        value = post.get(f"dim_{name}", "")
        if value in SCREEN_CHOICES:
            out[name] = _screen_to_pair_choice(value, shown_order)
    return out


def _judgment_error(request: HttpRequest, annotator: Annotator, message: str) -> HttpResponse:
    """400 with the current pair re-rendered and the message shown (compare.js lets htmx swap a 400)."""
    assignment = services.assignment_next(annotator=annotator)
    if assignment is None:
        return HttpResponseBadRequest(message)
    return _render_comparison(request, annotator, assignment, error=message, status=400)


# --- done -------------------------------------------------------------------------------------------


@require_http_methods(["GET"])
def done(request: HttpRequest, slug: str) -> HttpResponse:
    annotator = _get_annotator(request, slug)
    if annotator is None:
        return _join_redirect(slug)
    if response := _step_redirect(request, annotator, "done"):
        return response
    study = annotator.study
    code = annotator.completion_code
    return_url = study.completion_url.replace("{code}", code) if study.completion_url else ""
    n_judged, _quota = selectors.annotator_progress(annotator)
    context = {"study": study, "code": code, "return_url": return_url, "n_judged": n_judged}
    return render(request, "feedback/annotate/done.html", context)

