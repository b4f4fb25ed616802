"""The API's JSON parser: DRF's, with feedback.validation's rules (NaN, huge numbers, depth, NUL, surrogates)."""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from feedback.validation import strict_loads


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return strict_loads(stream.read().decode(encoding))
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and BadInput are all ValueErrors
            raise ParseError(f"JSON parse error - {exc}") from exc
