"""Researcher pages for a study's model endpoints and judgment design (issue 12).

    GET/POST /studies/<pk>/models                     endpoints (list, add) and the study's design
    POST     /studies/<pk>/models/<id>/test           "test connection" (htmx: the result fragment)
    POST     /studies/<pk>/models/<id>/active         enable / disable an endpoint
    POST     /studies/<pk>/design                     save the design (judgment types, conversations, QC)
    POST     /studies/<pk>/attention-checks           add gold/attention pairs

Every page is `@researcher_study_required` (feedback.decorators). An endpoint's API key is write-only: the
page says whether one is set, never what it is.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from feedback import conversations as conv
from feedback import services
from feedback.decorators import researcher_study_required
from feedback.forms_endpoints import DesignForm, EndpointForm
from feedback.models import Candidate, ModelEndpoint, Pair, Study
from feedback.views_research import HtmxHttpRequest


def _design_initial(study: Study) -> dict:
    return {
        "kind": study.kind, "attributes": ", ".join(study.attributes or []),
        "conversation_turns": study.conversation_turns, "conversations_per_annotator": study.conversations_per_annotator,
        "first_turn_answers": study.first_turn_answers, "seed_prompts": "\n".join(study.seed_prompts or []),
        "repeat_rate": study.repeat_rate, "gold_rate": study.gold_rate,
    }


def _page(request: HtmxHttpRequest, study: Study, *, endpoint_form: EndpointForm | None = None,
          design_form: DesignForm | None = None, status: int = 200) -> HttpResponse:
    endpoints = list(ModelEndpoint.objects.filter(study=study).order_by("id"))
    flagged = {
        e.pk: Candidate.objects.filter(prompt__study=study, metadata__endpoint_id=e.pk, metadata__names_model=True).count()
        for e in endpoints
    }
    context = {
        "study": study,
        "endpoints": [(e, flagged.get(e.pk, 0)) for e in endpoints],
        "endpoint_form": endpoint_form or EndpointForm(),
        "design_form": design_form or DesignForm(initial=_design_initial(study)),
        "n_gold": Pair.objects.filter(study=study).exclude(gold_choice="").count(),
    }
    return render(request, "feedback/research/study_models.html", context, status=status)


@researcher_study_required(methods=["GET", "POST"])
def study_models(request: HtmxHttpRequest, study: Study) -> HttpResponse:
    if request.method == "POST":
        form = EndpointForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                endpoint = conv.endpoint_create(
                    study=study, name=data["name"], base_url=data["base_url"], model_id=data["model_id"],
                    params=data["params"], api_key=data["api_key"], system_prompt=data["system_prompt"],
                )
            except services.ServiceError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Model “{endpoint.name}” added. Test its connection below.")
                return redirect("feedback:study_models", pk=study.pk)
        return _page(request, study, endpoint_form=form, status=400)
    return _page(request, study)


@researcher_study_required(methods=["POST"])
def endpoint_test(request: HtmxHttpRequest, study: Study, endpoint_id: int) -> HttpResponse:
    endpoint = get_object_or_404(ModelEndpoint, pk=endpoint_id, study=study)
    check = conv.endpoint_test(endpoint=endpoint)
    if not request.htmx:
        (messages.success if check.ok else messages.error)(request, f"{endpoint.name}: {check.message}")
        return redirect("feedback:study_models", pk=study.pk)
    return render(request, "feedback/research/study_models.html#test-result", {"check": check, "endpoint": endpoint})


@researcher_study_required(methods=["POST"])
def endpoint_active(request: HtmxHttpRequest, study: Study, endpoint_id: int) -> HttpResponse:
    endpoint = get_object_or_404(ModelEndpoint, pk=endpoint_id, study=study)
    conv.endpoint_set_active(endpoint=endpoint, active=request.POST.get("active") == "1")
    return redirect("feedback:study_models", pk=study.pk)


@researcher_study_required(methods=["POST"])
def study_design(request: HtmxHttpRequest, study: Study) -> HttpResponse:
    form = DesignForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            conv.study_set_design(
                study=study, kind=data["kind"], attributes=data["attributes"].split(","),
                conversation_turns=data["conversation_turns"],
                conversations_per_annotator=data["conversations_per_annotator"],
                first_turn_answers=data["first_turn_answers"], seed_prompts=data["seed_prompts"].splitlines(),
                repeat_rate=data["repeat_rate"], gold_rate=data["gold_rate"],
            )
        except services.ServiceError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Study design saved.")
            return redirect("feedback:study_models", pk=study.pk)
    return _page(request, study, design_form=form, status=400)


@researcher_study_required(methods=["POST"])
def attention_checks(request: HtmxHttpRequest, study: Study) -> HttpResponse:
    try:
        n = int(request.POST.get("n", "3"))
        services.study_add_attention_checks(study=study, n=n)
    except (ValueError, services.ServiceError) as exc:
        messages.error(request, str(exc) if isinstance(exc, services.ServiceError) else "Give a number of checks.")
    else:
        messages.success(request, f"Added {n} attention checks; they are shown at the study's gold rate.")
    return redirect("feedback:study_models", pk=study.pk)
