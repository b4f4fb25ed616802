"""training/selectors.py: the reads of the training domain, and the API's independence from HTML views."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.factories import StudyFactory
from training import selectors
from training.models import ModelVersion

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_it_returns_the_active_version_only():
    study, other = StudyFactory(), StudyFactory()
    assert selectors.active_version(study.pk) is None
    ModelVersion.objects.create(study=study, kind="bt", status=ModelVersion.Status.READY)
    active = ModelVersion.objects.create(study=study, kind="vpl", status=ModelVersion.Status.ACTIVE)
    ModelVersion.objects.create(study=other, kind="bt", status=ModelVersion.Status.ACTIVE)
    assert selectors.active_version(study.pk) == active


@pytest.mark.django_db
def test_it_refuses_a_dashboard_grouped_by_an_unknown_field():
    with pytest.raises(ValueError, match="cannot group by"):
        selectors.dashboard_data(StudyFactory(), "favourite_colour")


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize(
    "module", sorted(str(p.relative_to(ROOT)) for app in ("feedback", "training") for p in (ROOT / app).glob("api*.py"))
)
def test_it_keeps_api_modules_off_html_view_modules(module):
    # The API reads through selectors; an HTML view module is free to change its helpers.
    def is_html_views(name: str) -> bool:
        parts = name.split(".")
        return parts[0] in ("feedback", "training") and any(p == "views" or p.startswith("views_") for p in parts)

    html_views = sorted(m for m in _imported_modules(ROOT / module) if is_html_views(m))
    assert html_views == [], f"{module} imports {html_views}"
