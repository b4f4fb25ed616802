"""Import a JSONL/CSV file (gzip accepted) into a study: the same code path as the upload page."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from feedback import services
from feedback.importers import ImportFileError
from feedback.models import Study


class Command(BaseCommand):
    help = (
        "Import pairs into a study from a JSONL or CSV file (optionally .gz) in TRL, multi-response or "
        "hh-rlhf form. The whole file is validated first; on any bad line nothing is stored and every "
        "bad line is printed as FILE:LINE: message."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="path of the file to import")
        parser.add_argument("--study", required=True, help="the study's name (or slug)")
        parser.add_argument("--create", action="store_true", help="create the study if it does not exist")
        parser.add_argument(
            "--allow-duplicates", action="store_true",
            help="import rows that are already in the study (or repeat in the file) anyway",
        )

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        name: str = options["study"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc

        study = Study.objects.filter(name=name).first() or Study.objects.filter(slug=name).first()
        if study is None and not options["create"]:
            raise CommandError(f'no study named "{name}" (use --create to make it)')
        try:
            # One transaction: a study made by --create is not left behind when the file is bad.
            with transaction.atomic():
                created = study is None
                if study is None:
                    study = services.study_create(name=name, created_by=None)
                result = services.study_import(
                    study=study, data=data, filename=path.name, allow_duplicates=options["allow_duplicates"]
                )
        except ImportFileError as exc:
            for error in exc.errors:
                self.stderr.write(f"{path}:{error.line}: {error.message}")
            raise CommandError(f"{len(exc.errors)} bad line(s) in {path}; nothing was imported") from exc
        except services.ServiceError as exc:
            raise CommandError(str(exc)) from exc

        if created:
            self.stdout.write(f'Created study "{study.name}" (slug {study.slug}).')
        self.stdout.write(
            self.style.SUCCESS(
                f'Imported into "{study.name}": {result.prompts} prompts, {result.candidates} responses, '
                f"{result.pairs} pairs ({result.format} format)."
            )
        )
