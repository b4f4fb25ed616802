"""The researcher pages' access rule, as one decorator: login, then the HTTP method, then the study.

    @researcher_study_required(methods=["POST"])
    def study_status(request, study): ...

Anonymous users are sent to the login page (login_required); a method the page does not take is 405; then
feedback.selectors.get_study_for_researcher answers 404 for a missing study and 403 for anyone who is not
one of its researchers (annotator accounts included). The view gets the study instead of the URL's `pk`.
The method check sits between the two so a wrong method stays 405 for every logged-in user, as it was when
each page stacked login_required, require_http_methods and the study check itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, overload

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_http_methods

from feedback import selectors

StudyView = Callable[..., HttpResponse]


@overload
def researcher_study_required(view: StudyView, /) -> Callable[..., HttpResponse]: ...


@overload
def researcher_study_required(
    *, methods: Sequence[str] | None = None
) -> Callable[[StudyView], Callable[..., HttpResponse]]: ...


def researcher_study_required(view: StudyView | None = None, /, *, methods: Sequence[str] | None = None) -> Any:
    """Use bare (`@researcher_study_required`, any method) or with `methods=[...]` (require_http_methods)."""

    def decorate(func: StudyView) -> Callable[..., HttpResponse]:
        @wraps(func)
        def with_study(request: HttpRequest, *args: Any, pk: int, **kwargs: Any) -> HttpResponse:
            study = selectors.get_study_for_researcher(user=request.user, pk=pk)
            return func(request, study, *args, **kwargs)

        checked = require_http_methods(list(methods))(with_study) if methods else with_study
        return login_required(checked)

    return decorate(view) if view is not None else decorate
