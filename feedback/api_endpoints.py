"""API for a study's model endpoints (issue 12): researchers list, add and test them.

    GET  /api/v1/studies/{id}/endpoints/              the study's endpoints
    POST /api/v1/studies/{id}/endpoints/              add one
    POST /api/v1/studies/{id}/endpoints/{eid}/test/   send one short request; says what worked or failed

`api_key` is write-only: responses carry `has_api_key`, never the key.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from feedback import conversations as conv
from feedback.api_errors import error_responses
from feedback.api_views import ChorusAPIView
from feedback.models import ModelEndpoint
from feedback.permissions import StudyResearcherMixin


class EndpointSerializer(serializers.ModelSerializer):
    has_api_key = serializers.SerializerMethodField(help_text="Whether an API key is stored (it is never returned).")
    api_key = serializers.CharField(write_only=True, required=False, allow_blank=True, default="", max_length=500)
    params = serializers.JSONField(required=False, default=dict,
                                   help_text="Sampling parameters: temperature, top_p, max_tokens, seed, ...")

    class Meta:
        model = ModelEndpoint
        fields = ["id", "name", "base_url", "model_id", "params", "system_prompt", "is_active", "api_key",
                  "has_api_key", "created_at"]
        read_only_fields = ["id", "is_active", "has_api_key", "created_at"]

    def get_has_api_key(self, obj: ModelEndpoint) -> bool:
        return bool(obj.api_key)


class ConnectionCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()
    latency_ms = serializers.IntegerField(allow_null=True)
    sample = serializers.CharField(allow_blank=True)


class EndpointListCreateView(StudyResearcherMixin, ChorusAPIView):
    @extend_schema(summary="A study's model endpoints", responses={200: EndpointSerializer(many=True),
                                                                  **error_responses(401, 403, 404)})
    def get(self, request, pk: int):
        study = self.get_study()
        return Response(EndpointSerializer(ModelEndpoint.objects.filter(study=study), many=True).data)

    @extend_schema(summary="Add a model endpoint to a study", request=EndpointSerializer,
                   responses={201: EndpointSerializer, **error_responses(400, 401, 403, 404, 409)})
    def post(self, request, pk: int):
        study = self.get_study()
        serializer = EndpointSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = conv.endpoint_create(study=study, **serializer.validated_data)
        return Response(EndpointSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class EndpointTestView(StudyResearcherMixin, ChorusAPIView):
    @extend_schema(summary="Test a model endpoint's connection", request=None,
                   responses={200: ConnectionCheckSerializer, **error_responses(401, 403, 404)})
    def post(self, request, pk: int, endpoint_id: int):
        study = self.get_study()
        endpoint = get_object_or_404(ModelEndpoint, pk=endpoint_id, study=study)
        check = conv.endpoint_test(endpoint=endpoint)
        return Response(ConnectionCheckSerializer(check).data)
