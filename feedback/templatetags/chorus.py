from django import template
from django.utils.safestring import mark_safe

from feedback.rendering import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> str:
    # Safe to mark: render_markdown sanitizes with nh3 (see feedback/rendering.py).
    return mark_safe(render_markdown(text or ""))  # noqa: S308
