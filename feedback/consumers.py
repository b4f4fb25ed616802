from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from feedback.models import Annotator, Study
from feedback.realtime import annotator_group, study_group


@database_sync_to_async
def _groups_for(user, study_id: int) -> list[str]:
    """Researchers of the study hear study-wide events; an annotator only their own."""
    study = Study.objects.filter(pk=study_id).first()
    if study is None or not user.is_authenticated:
        return []
    if study.has_researcher(user):
        return [study_group(study.pk)]
    annotator = Annotator.objects.filter(user=user, study=study).first()
    return [annotator_group(annotator.pk)] if annotator else []


class StudyConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.groups_joined = await _groups_for(self.scope["user"], int(self.scope["url_route"]["kwargs"]["study_id"]))
        if not self.groups_joined:
            await self.close(code=4403)
            return
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def chorus_event(self, message: dict) -> None:
        await self.send_json({"event": message["event"], **message["payload"]})
