"""Seed a demo researcher and a demo study (idempotent: running it again changes nothing)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.urls import reverse

from feedback import selectors, services
from feedback.importers import ImportFileError
from feedback.models import Study
from feedback.profile_schema import ALL_FIELD_NAMES

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"
DEMO_SLUG = "demo"
DEMO_NAME = "Demo: which answer is better?"
DEMO_DATA = Path(__file__).resolve().parents[2] / "demo" / "demo_study.jsonl"

DEMO_INSTRUCTIONS = """\
You will see a question and two answers written by AI assistants.

- Read both answers, then pick the one **you** prefer — there are no right or wrong answers.
- Use the slider to say how strongly you prefer it, and choose *Tie* if you have no preference.
- Optionally, tell us in a sentence why.
"""

DEMO_CONSENT = """\
This is a demonstration study of **Chorus**. Your answers are stored under a random pseudonym and are
used only to show how the tool works. You can stop at any time by closing the page.

By continuing you confirm that you are 18 or older and agree to take part.
"""


class Command(BaseCommand):
    help = f'Create the demo researcher ("{DEMO_USERNAME}") and the "{DEMO_NAME}" study; safe to run again.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", default=DEMO_PASSWORD, help="the demo researcher's password")
        parser.add_argument("--data", default=str(DEMO_DATA), help="the file the demo study is imported from")

    def handle(self, *args, **options) -> None:
        password: str = options["password"]
        data_path = Path(options["data"])
        with transaction.atomic():
            user, user_created = self._demo_user(password)
            study = Study.objects.filter(slug=DEMO_SLUG).first()
            study_created = study is None
            if study is None:
                study = self._demo_study(user, data_path)
            elif not study.has_researcher(user):
                study.researchers.add(user)

        counts = selectors.study_counts(study)
        base = settings.PUBLIC_URL
        self.stdout.write(
            f"{'Created' if user_created else 'Found'} the demo researcher; "
            f"{'created' if study_created else 'found'} the demo study "
            f"({counts.prompts} prompts, {counts.pairs} pairs)."
        )
        self.stdout.write(f"  App:         {base}/")
        self.stdout.write(f"  Study page:  {base}{reverse('feedback:study_detail', args=[study.pk])}")
        self.stdout.write(f"  Join link:   {selectors.join_url(study)}")
        self.stdout.write(f"  Admin:       {base}{reverse('admin:index')}")
        self.stdout.write(f"  Log in as:   {DEMO_USERNAME} / {password}")

    def _demo_user(self, password: str):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=DEMO_USERNAME)
        changed = []
        if created or not user.check_password(password):
            user.set_password(password)
            changed.append("password")
        for flag in ("is_superuser", "is_staff", "is_active"):
            if not getattr(user, flag):
                setattr(user, flag, True)
                changed.append(flag)
        if changed:
            user.save()
        return user, created

    def _demo_study(self, user, data_path: Path) -> Study:
        try:
            data = data_path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read the demo data {data_path}: {exc.strerror or exc}") from exc
        study = services.study_create(
            name=DEMO_NAME,
            slug=DEMO_SLUG,
            created_by=user,
            instructions=DEMO_INSTRUCTIONS,
            consent_text=DEMO_CONSENT,
            profile_fields=list(ALL_FIELD_NAMES),
            overlap_target=3,
            pairs_per_annotator=8,
        )
        try:
            services.study_import(study=study, data=data, filename=data_path.name)
        except ImportFileError as exc:
            lines = "\n".join(f"{data_path}:{e.line}: {e.message}" for e in exc.errors)
            raise CommandError(f"the demo data is invalid:\n{lines}") from exc
        return study
