"""The researcher's export page: download links for every format, and what the columns mean."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from feedback import exports, selectors
from feedback.decorators import researcher_study_required
from feedback.models import Study


@researcher_study_required
def study_export(request: HttpRequest, study: Study) -> HttpResponse:
    judgments_url = reverse("api-study-export", args=[study.pk])
    profiles_url = reverse("api-study-export-profiles", args=[study.pk])
    context = {
        "study": study,
        "counts": selectors.study_counts(study),
        "downloads": [
            {
                "title": "Judgments",
                "what": "One row per judgment, in TRL preference form.",
                "links": [(fmt, f"{judgments_url}?format={fmt}", exports.filename(study, "judgments", fmt))
                          for fmt in exports.FORMATS],
            },
            {
                "title": "Annotator profiles",
                "what": "One row per annotator, under their pseudonym.",
                "links": [(fmt, f"{profiles_url}?format={fmt}", exports.filename(study, "profiles", fmt))
                          for fmt in exports.FORMATS],
            },
            {
                "title": "Ratings (1–100)",
                "what": "One row per rated response of N-way ratings (live conversations); the judgments export "
                "holds the pairs derived from them.",
                "links": [(fmt, f"{reverse('api-study-export-ratings', args=[study.pk])}?format={fmt}",
                           exports.filename(study, "ratings", fmt)) for fmt in exports.FORMATS],
            },
        ],
        "profile_columns": [name for name, _ in exports.profile_columns(study)],
        "rating_columns": exports.column_docs("ratings"),
        "judgment_columns": exports.column_docs("judgments"),
        "profile_export_columns": exports.column_docs("profiles"),
    }
    return render(request, "feedback/exports/study_export.html", context)
