import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import importlib, pkgutil, sys
import personalization
names = [m.name for m in pkgutil.walk_packages(personalization.__path__, "personalization.")
         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
from personalization import load_reward_model, export_user_model, load_model, fit, Posterior  # noqa: F401
assert "personalization.models.vpl" in sys.modules
bad = sorted(m for m in sys.modules if m == "django" or m.startswith("django."))
assert not bad, bad
print("ok", len(names))
"""


def test_it_imports_without_django():
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_it_loads_standalone_api_without_training_modules():
    code = ("import sys; from personalization import load_reward_model; "
            "heavy = [m for m in ('personalization.train', 'personalization.models', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
