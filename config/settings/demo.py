"""`make demo`: the embedded default with DEBUG on for a local try-out."""

from config.settings.base import *  # noqa: F403

DEBUG = True
