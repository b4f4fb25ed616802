"""Push events to browsers over Channels. Failures never break the write that triggered them."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def study_group(study_id: int) -> str:
    return f"study-{study_id}"


def annotator_group(annotator_id: int) -> str:
    return f"annotator-{annotator_id}"


def send_event(group: str, event: str, payload: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": "chorus.event", "event": event, "payload": payload})
    except Exception:  # a down Redis must not lose the judgment that was just saved
        log.warning("could not push %s to %s", event, group, exc_info=True)
