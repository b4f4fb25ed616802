from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import PermissionDenied
from django.http import Http404

from feedback import selectors
from feedback.realtime import annotator_group, study_group

# Close code for every refused connection (no such study, not allowed): 4000 + the HTTP status, and the
# same for both so the socket says no more than the pages do to someone who may not see the study.
REFUSED = 4403


@database_sync_to_async
def _groups_for(user, study_id: int) -> list[str]:
    """Researchers of the study hear study-wide events; an annotator of the study only their own.

    The two rules of the HTTP side, unchanged: selectors.own_annotator (what the annotator may see of their
    own) and selectors.get_study_for_researcher (who is a researcher of the study). Nothing for anyone else.
    """
    own = selectors.own_annotator(user=user, study_id=study_id)
    if own is not None:
        return [annotator_group(own.pk)]
    try:
        study = selectors.get_study_for_researcher(user=user, pk=study_id)
    except (Http404, PermissionDenied):
        return []
    return [study_group(study.pk)]


class StudyConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.groups_joined = await _groups_for(self.scope["user"], int(self.scope["url_route"]["kwargs"]["study_id"]))
        if not self.groups_joined:
            await self.close(code=REFUSED)
            return
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def chorus_event(self, message: dict) -> None:
        await self.send_json({"event": message["event"], **message["payload"]})
