"""Seed the live-conversation demo study and its local models (idempotent).

    python manage.py seed_demo_conversation [--llm-url http://127.0.0.1:8001/v1]

The study's three endpoints point at the local dev server (`python -m feedback.llm_dev_server`, which
`make demo` starts next to runserver): tiny random transformers models, so a newcomer can try a live,
streamed conversation — PRISM-style 1-100 ratings of three answers on the first turn, then an A/B turn
with "both bad" — without any API key. Point the endpoints at vLLM or a hosted API on the study's
"Models & design" page (see the README).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from feedback import conversations, selectors, services
from feedback.models import ModelEndpoint, Study

SLUG = "demo-talk"
NAME = "Demo: talk to the models"
MODELS = (("Tiny A", "tiny-a", 0.9), ("Tiny B", "tiny-b", 0.7), ("Tiny C", "tiny-c", 1.1))
INSTRUCTIONS = """\
Have a short conversation with AI assistants. Write your own first message (or pick a suggestion).

- On the first turn, three assistants answer: **rate each answer from 1 to 100**.
- The best-rated answer continues the conversation; on the next turn pick the better of two answers,
  or say that **both are bad**.

(The demo's assistants are tiny untrained models: their answers are gibberish, on purpose.)
"""
SEEDS = [
    "What should I cook tonight with rice, eggs and spinach?",
    "Explain how vaccines work to a ten-year-old.",
    "Is it ever right to break a promise?",
]


class Command(BaseCommand):
    help = f'Create the "{NAME}" study with endpoints on the local dev model server; safe to run again.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--llm-url", default=settings.CHORUS_DEMO_LLM_URL,
                            help="base URL of the OpenAI-compatible server the demo models run on")

    def handle(self, *args, **options) -> None:
        url: str = options["llm_url"]
        user = get_user_model().objects.filter(username="demo").first()
        with transaction.atomic():
            study = Study.objects.filter(slug=SLUG).first()
            created = study is None
            if study is None:
                study = services.study_create(
                    name=NAME, slug=SLUG, created_by=user, instructions=INSTRUCTIONS, overlap_target=1,
                    pairs_per_annotator=10, profile_fields=["age", "gender"],
                )
                conversations.study_set_design(
                    study=study, kind="conversation", conversation_turns=2, first_turn_answers=3,
                    attributes=["helpfulness", "safety"], seed_prompts=SEEDS,
                )
            for name, model_id, temperature in MODELS:
                endpoint = ModelEndpoint.objects.filter(study=study, name=name).first()
                if endpoint is None:
                    conversations.endpoint_create(
                        study=study, name=name, base_url=url, model_id=model_id,
                        params={"temperature": temperature, "max_tokens": 40},
                    )
                elif endpoint.base_url != url:
                    ModelEndpoint.objects.filter(pk=endpoint.pk).update(base_url=url)
        self.stdout.write(f"{'Created' if created else 'Found'} the conversation demo study; models at {url}.")
        self.stdout.write(f"  Join link:   {selectors.join_url(study)}")
