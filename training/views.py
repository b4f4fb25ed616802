"""Researcher dashboard of a study, and an annotator's page for downloading their own reward model.

The dashboard numbers come from training.dashboard.study_dashboard (the API serves the same dict); the
page renders them twice — as tables here, and as charts drawn by static/js/dashboard.js from the
`dashboard-data` json_script. htmx swaps the `sections` partial when the grouping changes and when
dashboard.js hears a new judgment or model version on the study's websocket.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from feedback import selectors
from feedback.decorators import researcher_study_required
from feedback.models import Annotator, Judgment, Study
from feedback.profile_schema import FIELDS_BY_NAME, STATED_PREFS, groupable_fields
from training import downloads
from training import services as training_services
from training.broker import broker_down
from training.downloads import zip_response
from training.models import AnnotatorPosterior, ModelVersion
from training.selectors import DEFAULT_GROUP_BY, active_version, dashboard_data

log = logging.getLogger(__name__)
_STATED_LABELS = dict(STATED_PREFS)


# --- access helpers ---------------------------------------------------------------------------------


def _get_own_annotator(request: HttpRequest, slug: str) -> Annotator:
    """The session's annotator of study `slug`; 404 for everyone else (nothing to learn here)."""
    annotator = selectors.annotator_for_user(request.user)
    if annotator is None or annotator.study.slug != slug:
        raise Http404("No such page.")
    return annotator


# --- data -------------------------------------------------------------------------------------------


def field_label(name: str) -> str:
    if name.startswith("stated_prefs."):
        code = name.split(".", 1)[1]
        return f"Stated preference: {code} (low / mid / high)"
    spec = FIELDS_BY_NAME.get(name)
    return spec.label if spec else name


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def _matrix_rows(names: list[str], matrix: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": a, "cells": [(matrix.get(a) or {}).get(b) for b in names]} for a in names]


def _tables(study: Study, data: dict[str, Any]) -> dict[str, Any]:
    """The dashboard numbers reshaped for the HTML tables (the charts use `data` itself)."""
    groups = data["groups"]
    names = [g["name"] for g in groups]
    total_ann = max(1, data["progress"]["annotators"])
    total_j = max(1, data["progress"]["judgments"])
    progress_rows = [
        {"name": g["name"], "annotators": g["annotators"], "judgments": g["judgments"],
         "annotators_pct": 100 * g["annotators"] / total_ann, "judgments_pct": 100 * g["judgments"] / total_j}
        for g in groups
    ]
    models = [row["model"] for row in data["overall"]["leaderboard"]]
    boards = {g["name"]: {r["model"]: r for r in g["leaderboard"]} for g in groups}
    overall = {r["model"]: r for r in data["overall"]["leaderboard"]}
    leaderboard_rows = [
        {"model": m, "overall": overall.get(m), "cells": [boards[n].get(m) for n in names]} for m in models
    ]
    cross = data.get("cross_group_accuracy") or {}
    cross_names = cross.get("groups") or []
    sv_groups = sorted({g for a in data["stated_vs_revealed"]["attributes"] for g in a["by_group"]})
    stated_rows = [
        {**a, "cells": [a["by_group"].get(g) for g in sv_groups]} for a in data["stated_vs_revealed"]["attributes"]
    ]
    annotators = Annotator.objects.filter(study=study).values_list("pseudonym", "id", "excluded_at")
    ids = {pseudonym: pk for pseudonym, pk, _ in annotators}
    # Not cached with the rest: an exclusion must show at once (it does not change the numbers above).
    excluded = {pseudonym: at for pseudonym, _, at in annotators if at is not None}
    has_model = data.get("model_version") is not None
    quality_rows = [
        {**q, "model_url": reverse("api-annotator-reward-model", args=[study.pk, ids[q["annotator"]]])
         if has_model and q["annotator"] in ids else "",
         "annotator_id": ids.get(q["annotator"]), "excluded_at": excluded.get(q["annotator"])}
        for q in data["quality"]
    ]
    group_model_urls = {
        n: reverse("api-group-model", args=[study.pk]) + "?" + urlencode({"group_by": data["group_by"], "group": n})
        for n in names
    }
    return {
        "names": names,
        "progress_rows": progress_rows,
        "leaderboard_rows": leaderboard_rows,
        "rank_rows": _matrix_rows(names, data["rank_correlation"]),
        "between_rows": _matrix_rows(names, data["between_group_agreement"]),
        "cross_names": cross_names,
        "cross_rows": _matrix_rows(cross_names, cross.get("matrix") or {}),
        "cross_note": cross.get("note", ""),
        "stated_groups": sv_groups,
        "stated_rows": stated_rows,
        "quality_rows": quality_rows,
        "group_rows": [
            {**g, "personalized_pct": _pct(g["reward_accuracy"]["personalized"]),
             "population_pct": _pct(g["reward_accuracy"]["population"]), "model_url": group_model_urls[g["name"]]}
            for g in groups
        ],
        "overall_accuracy": {
            "personalized_pct": _pct(data["overall"]["reward_accuracy"]["personalized"]),
            "population_pct": _pct(data["overall"]["reward_accuracy"]["population"]),
            "n_heldout": data["overall"]["reward_accuracy"]["n_heldout"],
        },
        "pairs_pct": 100 * data["progress"]["pairs_complete"] / max(1, data["progress"]["pairs"]),
        "judgments_pct": 100 * data["progress"]["judgments"] / max(1, data["progress"]["target_judgments"]),
        "has_model": has_model,
        "stated_has_data": any(a["n"] for a in data["stated_vs_revealed"]["attributes"]),
        "model_finished": parse_datetime(data["model_version"]["finished_at"] or "") if has_model else None,
    }


# --- pages ------------------------------------------------------------------------------------------


@researcher_study_required(methods=["GET"])
def dashboard(request: HttpRequest, study: Study) -> HttpResponse:
    group_by = request.GET.get("group_by") or DEFAULT_GROUP_BY
    status = 200
    if group_by not in groupable_fields():
        group_by, status = DEFAULT_GROUP_BY, 400
    data = dashboard_data(study, group_by)
    context = {
        "study": study,
        "data": data,
        "group_by": group_by,
        "group_label": field_label(group_by),
        "fields": [(name, field_label(name)) for name in groupable_fields()],
        "bad_group_by": status == 400,
        "broker_down": broker_down(),
        "study_model_url": reverse("api-study-model", args=[study.pk]),
        "dashboard_url": reverse("training:dashboard", args=[study.pk]),
        **_tables(study, data),
    }
    template = "training/dashboard.html"
    htmx = getattr(request, "htmx", None)
    if htmx and not htmx.history_restore_request:  # a history restore wants the whole page
        template += "#sections"
    return render(request, template, context, status=status)


@require_GET
def my_model(request: HttpRequest, slug: str) -> HttpResponse:
    annotator = _get_own_annotator(request, slug)
    version = active_version(annotator.study_id)
    stored = (
        AnnotatorPosterior.objects.filter(annotator=annotator, model_version=version).first() if version else None
    )
    context = {
        "study": annotator.study,
        "annotator": annotator,
        "version": version,
        "posterior": stored,
        "accuracy_pct": _pct(stored.accuracy) if stored and stored.accuracy is not None else None,
        "n_judged": Judgment.objects.filter(annotator=annotator).count(),
    }
    return render(request, "training/my_model.html", context)


@require_GET
def my_model_download(request: HttpRequest, slug: str) -> HttpResponse:
    annotator = _get_own_annotator(request, slug)
    try:
        bundle = downloads.annotator_model_zip(annotator)
    except downloads.NoModelYet as exc:
        return render(request, "training/no_model.html", {"study": annotator.study, "message": str(exc)}, status=409)
    return zip_response(bundle)


# --- the study page's "Train now" panel -------------------------------------------------------------


def train_panel_context(study: Study, *, error: str = "") -> dict[str, Any]:
    """What the panel shows: the active model, the newest run and its status (polled while it runs)."""
    latest = ModelVersion.objects.filter(study=study).order_by("-id").first()
    active = active_version(study.pk)
    pending = latest is not None and latest.status in (ModelVersion.Status.QUEUED, ModelVersion.Status.TRAINING)
    return {
        "study": study,
        "active": active,
        "active_accuracy": _pct((active.metrics or {}).get("accuracy")) if active else None,
        "latest": latest if latest is not None and latest != active else None,
        "latest_error": (latest.error.strip().splitlines() or [""])[0][:300] if latest and latest.error else "",
        "pending": pending,
        "error": error,
    }


@researcher_study_required(methods=["POST"])
def train_now(request: HttpRequest, study: Study) -> HttpResponse:
    """Queue a retrain of the study's model now (idempotent while one runs); htmx swaps the panel."""
    error = ""
    try:
        training_services.model_version_request(study=study)
    except training_services.NotEnoughJudgments as exc:
        error = f"Not yet: {exc}."
    htmx = getattr(request, "htmx", None)
    if not htmx:
        if error:
            messages.error(request, error)
        else:
            messages.success(request, "Training started.")
        return redirect(reverse("feedback:study_detail", args=[study.pk]) + "#settings")
    # 200 even for "not yet": htmx swaps only 2xx, and the panel carries the reason.
    return render(request, "training/_train_panel.html", train_panel_context(study, error=error))


@researcher_study_required(methods=["GET"])
def train_status(request: HttpRequest, study: Study) -> HttpResponse:
    """The panel alone: the page polls this every few seconds while a run is queued or training."""
    return render(request, "training/_train_panel.html", train_panel_context(study))
