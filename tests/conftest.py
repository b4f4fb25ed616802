from __future__ import annotations

from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.factories import AnnotatorFactory, ResearcherFactory, make_study_with_pairs

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
HH_TEST = SHARED_DATA / "hh-rlhf-harmless-base" / "test.jsonl.gz"


@pytest.fixture
def hh_rlhf_path() -> Path:
    if not HH_TEST.exists():
        pytest.skip(f"external data not found at {HH_TEST}")
    return HH_TEST


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def researcher(db):
    return ResearcherFactory()


@pytest.fixture
def study(db, researcher):
    return make_study_with_pairs(6, created_by=researcher)


@pytest.fixture
def annotator(db, study):
    return AnnotatorFactory(study=study)


@pytest.fixture
def other_annotator(db):
    """An annotator of another study: must never see or touch `study`'s data."""
    other = make_study_with_pairs(2)
    return AnnotatorFactory(study=other)


@pytest.fixture(scope="session")
def llm_server():
    """A real OpenAI-compatible server on 127.0.0.1 backed by tiny random GPT-2-shaped transformers models."""
    from feedback.llm_dev_server import DevServer, TinyLMConfig

    server = DevServer(models=("tiny-a", "tiny-b", "tiny-c", "tiny-d"), config=TinyLMConfig(default_max_tokens=12))
    server.start()
    yield server
    server.stop()
