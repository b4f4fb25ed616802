"""config.settings.production: refuses weak secrets and missing hosts, HTTPS on by env, CSP, check --deploy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = "k3y-Zq8#xV1!pL0@mN7$wR4%tY6^uI9&oP2*aS5(dF3)gHjK-bN8~cX2+eW7"
GOOD_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": STRONG_KEY,
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/chorus",
    "ALLOWED_HOSTS": "chorus.example.org",
}


def _run(code: str | None = None, *, env: dict[str, str], args: list[str] | None = None):
    # The browser tests' modules set DJANGO_ALLOW_ASYNC_UNSAFE in this process (their live server needs it);
    # a deployment never has it, and check --deploy rightly flags it.
    dropped = ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE")
    base = {k: v for k, v in os.environ.items() if k not in dropped}
    cmd = [sys.executable, *(args or ["-c", code or ""])]
    return subprocess.run(cmd, cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120)


def test_manage_py_check_deploy_is_clean_in_production_settings():
    result = _run(env=GOOD_ENV, args=["manage.py", "check", "--deploy", "--fail-level", "WARNING"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY is empty"),
        ({"SECRET_KEY": "   "}, "SECRET_KEY is empty"),
        ({"SECRET_KEY": "short-key"}, "too weak"),
        ({"SECRET_KEY": "a" * 60}, "too weak"),
        ({"SECRET_KEY": "insecure-dev-key-change-me-in-production-0123456789"}, "public development key"),
        ({"SECRET_KEY": None}, "SECRET_KEY is empty"),
        ({"DATABASE_URL": None}, "DATABASE_URL must be set"),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS must name"),
        ({"ALLOWED_HOSTS": "testserver"}, "ALLOWED_HOSTS must name"),
    ],
)
def test_it_refuses_to_start_without_a_strong_key_a_database_and_hosts(changes, message):
    env = {k: v for k, v in {**GOOD_ENV, **changes}.items() if v is not None}
    result = _run("import django; django.setup()", env=env)
    assert result.returncode != 0
    assert message in result.stderr


def test_https_settings_are_on_by_default_and_follow_the_environment():
    code = ("from django.conf import settings as s; "
            "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.ALLOWED_HOSTS)")
    on = _run(code, env={**GOOD_ENV, "ALLOWED_HOSTS": "chorus.example.org,testserver"})
    assert on.stdout.strip().split(maxsplit=3) == ["True", "31536000", "True", "['chorus.example.org']"], on.stderr
    off = _run(code, env={**GOOD_ENV, "SECURE_SSL_REDIRECT": "0", "SECURE_HSTS_SECONDS": "0"})
    assert off.stdout.split()[:2] == ["False", "0"], off.stderr


@pytest.mark.parametrize("module", ["config.asgi", "config.celery"])
def test_the_entry_points_never_fall_back_to_the_development_settings(module):
    """Without DJANGO_SETTINGS_MODULE, the ASGI app and the Celery app load production settings and refuse."""
    code = f"import {module} as m\nfrom django.conf import settings\nprint(settings.SECRET_KEY)"
    result = _run(code, env={})
    assert result.returncode != 0
    assert "set a strong SECRET_KEY in production" in result.stderr
    good = _run(f"import {module}\nfrom django.conf import settings\nprint(settings.SETTINGS_MODULE)",
                env={k: v for k, v in GOOD_ENV.items() if k != "DJANGO_SETTINGS_MODULE"})
    assert good.stdout.strip() == "config.settings.production", good.stderr


def _directive(policy: str, name: str) -> str:
    return next(d.strip() for d in policy.split(";") if d.strip().startswith(name + " "))


@pytest.mark.django_db
def test_every_page_sends_a_content_security_policy(client, study, researcher):
    policy = client.get(f"/s/{study.slug}/join")["Content-Security-Policy"]
    assert _directive(policy, "default-src") == "default-src 'self'"
    assert _directive(policy, "script-src") == "script-src 'self'"  # no inline script at all here
    assert _directive(policy, "object-src") == "object-src 'none'"
    assert _directive(policy, "frame-ancestors") == "frame-ancestors 'none'"
    # A page with a small inline script allows exactly that script, by a per-response nonce.
    client.force_login(researcher)
    response = client.get(f"/studies/{study.pk}/")
    script_src = _directive(response["Content-Security-Policy"], "script-src")
    nonce = script_src.split("'nonce-")[1].rstrip("'")
    assert f'<script nonce="{nonce}">' in response.content.decode()
    assert "unsafe-inline" not in script_src
