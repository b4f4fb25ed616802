from __future__ import annotations

import gzip
import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from feedback.management.commands.seed_demo import DEMO_DATA
from feedback.models import Candidate, Pair, Prompt, Study
from feedback.profile_schema import ALL_FIELD_NAMES
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db

User = get_user_model()

GOOD = "\n".join(
    json.dumps({"prompt": f"Question {i}?", "chosen": f"Good answer {i}", "rejected": f"Bad answer {i}"})
    for i in range(3)
)


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def snapshot():
    return (
        list(User.objects.order_by("pk").values_list("pk", "username", "password", "is_superuser")),
        list(Study.objects.order_by("pk").values()),
        Prompt.objects.count(),
        Candidate.objects.count(),
        Pair.objects.count(),
    )


# --- import_study ---------------------------------------------------------------------------------


def test_it_imports_a_file_into_an_existing_study(tmp_path):
    study = StudyFactory(name="Existing")
    path = tmp_path / "pairs.jsonl"
    path.write_text(GOOD)
    out, err = run("import_study", str(path), "--study", "Existing")
    assert "3 prompts, 6 responses, 3 pairs (trl format)" in out
    assert err == ""
    assert Pair.objects.filter(study=study).count() == 3


def test_it_finds_the_study_by_slug_and_reads_gzip_csv(tmp_path):
    study = StudyFactory(name="By slug", slug="by-slug")
    path = tmp_path / "pairs.csv.gz"
    path.write_bytes(gzip.compress(b"prompt,response_1,model_1,response_2,model_2\nQ?,yes,A,no,B\n"))
    out, _ = run("import_study", str(path), "--study", "by-slug")
    assert "1 prompts, 2 responses, 1 pairs (responses format)" in out
    pair = Pair.objects.get(study=study)
    assert (pair.candidate_a.model_name, pair.candidate_b.model_name) == ("A", "B")


def test_it_reports_every_bad_line_and_imports_nothing(tmp_path):
    study = StudyFactory(name="Existing")
    path = tmp_path / "bad.jsonl"
    lines = GOOD.splitlines()
    lines.insert(1, "{oops")
    lines.append(json.dumps({"prompt": "Q", "chosen": "same", "rejected": "same"}))
    path.write_text("\n".join(lines))
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("import_study", str(path), "--study", "Existing", stdout=out, stderr=err)
    assert info.value.returncode == 1
    assert "2 bad line(s)" in str(info.value)
    assert err.getvalue().splitlines() == [
        f"{path}:2: invalid JSON (Expecting property name enclosed in double quotes at column 2)",
        f'{path}:5: "chosen" and "rejected" are identical',
    ]
    assert out.getvalue() == ""
    assert Pair.objects.filter(study=study).count() == 0
    assert Prompt.objects.count() == 0


def test_it_refuses_a_missing_study_without_create(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(GOOD)
    with pytest.raises(CommandError, match="use --create"):
        run("import_study", str(path), "--study", "Nope")
    assert Study.objects.count() == 0


def test_it_creates_the_study_with_create(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(GOOD)
    out, _ = run("import_study", str(path), "--study", "Fresh study", "--create")
    study = Study.objects.get(name="Fresh study")
    assert study.created_by is None
    assert study.slug == "fresh-study"
    assert Pair.objects.filter(study=study).count() == 3
    assert 'Created study "Fresh study"' in out
    # The same file again is refused as a duplicate (nothing stored) unless confirmed; --create with an
    # existing study imports into it.
    with pytest.raises(CommandError, match="already in this study"):
        run("import_study", str(path), "--study", "Fresh study", "--create")
    assert Pair.objects.filter(study=study).count() == 3
    run("import_study", str(path), "--study", "Fresh study", "--create", "--allow-duplicates")
    assert Study.objects.count() == 1
    assert Pair.objects.filter(study=study).count() == 6


def test_it_leaves_no_study_behind_when_create_meets_a_bad_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{oops\n")
    with pytest.raises(CommandError):
        run("import_study", str(path), "--study", "Fresh study", "--create")
    assert Study.objects.count() == 0


def test_it_reports_an_unreadable_file(tmp_path):
    StudyFactory(name="Existing")
    with pytest.raises(CommandError, match="cannot read"):
        run("import_study", str(tmp_path / "missing.jsonl"), "--study", "Existing")


# --- seed_demo ------------------------------------------------------------------------------------


@pytest.fixture
def demo_file(tmp_path):
    path = tmp_path / "demo.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"Demo question {i}?",
                    "responses": [
                        {"text": f"Answer {i} from A", "model": "Aster-7B"},
                        {"text": f"Answer {i} from B", "model": "Bramble-13B"},
                        {"text": f"Answer {i} from C", "model": "Cobalt-Chat"},
                    ],
                }
            )
            for i in range(4)
        )
    )
    return path


def test_it_seeds_the_demo(demo_file, settings):
    settings.PUBLIC_URL = "https://chorus.example.org"
    out, _ = run("seed_demo", "--data", str(demo_file))
    user = User.objects.get(username="demo")
    assert user.check_password("demo-password")
    assert user.is_superuser and user.is_staff
    study = Study.objects.get(slug="demo")
    assert study.name == "Demo: which answer is better?"
    assert (study.overlap_target, study.pairs_per_annotator) == (3, 8)
    assert study.profile_fields == list(ALL_FIELD_NAMES)
    assert study.has_researcher(user) and study.created_by == user
    assert study.is_open()
    assert Pair.objects.filter(study=study).count() == 12
    assert "https://chorus.example.org/" in out
    assert f"https://chorus.example.org/studies/{study.pk}/" in out
    assert "https://chorus.example.org/s/demo/join" in out
    assert "demo / demo-password" in out


def test_it_seeds_the_demo_idempotently(demo_file):
    run("seed_demo", "--data", str(demo_file))
    before = snapshot()
    out, _ = run("seed_demo", "--data", str(demo_file))
    assert snapshot() == before
    assert "Found the demo researcher; found the demo study (4 prompts, 12 pairs)" in out


def test_it_takes_a_password(demo_file):
    run("seed_demo", "--data", str(demo_file), "--password", "s3cret-pass")
    assert User.objects.get(username="demo").check_password("s3cret-pass")
    out, _ = run("seed_demo", "--data", str(demo_file), "--password", "other-pass")
    assert User.objects.get(username="demo").check_password("other-pass")
    assert "demo / other-pass" in out


def test_it_seeds_nothing_from_a_bad_demo_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "only one", "responses": ["x"]}\n')
    with pytest.raises(CommandError, match="bad.jsonl:1:"):
        run("seed_demo", "--data", str(path))
    assert Study.objects.count() == 0
    assert not User.objects.filter(username="demo").exists()


@pytest.mark.skipif(not DEMO_DATA.exists(), reason="feedback/demo/demo_study.jsonl is not there yet")
def test_it_seeds_the_shipped_demo_study_twice_without_changes():
    run("seed_demo")
    before = snapshot()
    assert before[4] > 0
    run("seed_demo")
    assert snapshot() == before
