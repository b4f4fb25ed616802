"""Entry point of ``python -m personalization``."""

from .cli import main

raise SystemExit(main())
