"""Training pieces drawn inside feedback's pages (the study page's "Train now" panel), so feedback's views
never import the training app."""

from __future__ import annotations

from django import template

register = template.Library()


@register.inclusion_tag("training/_train_panel.html")
def train_panel(study):
    from training.views import train_panel_context

    return train_panel_context(study)
