"""Number formatting for the dashboard tables: undefined statistics (None) show as an en dash."""

from __future__ import annotations

from django import template

register = template.Library()
DASH = "–"


@register.filter
def num(value, digits: int = 2) -> str:
    if value is None or value == "":
        return DASH
    try:
        return f"{float(value):.{int(digits)}f}"
    except (TypeError, ValueError):
        return DASH


@register.filter
def pct(value, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage."""
    if value is None or value == "":
        return DASH
    try:
        return f"{100 * float(value):.{int(digits)}f}%"
    except (TypeError, ValueError):
        return DASH


@register.filter
def seconds(ms) -> str:
    if ms is None or ms == "":
        return DASH
    return f"{float(ms) / 1000:.1f} s"


@register.filter
def width(value) -> str:
    """A percentage clamped to 0–100, for inline bar widths (CSS custom property)."""
    try:
        return f"{max(0.0, min(100.0, float(value))):.1f}"
    except (TypeError, ValueError):
        return "0"
