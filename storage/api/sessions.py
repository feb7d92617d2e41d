"""Plain chunked uploads under /api/v1/uploads/ (for slides and DICOM; see storage.services.sessions).

    POST   uploads/                    {"file_name", "size", "purpose", "chunk_size"?, "sha256"?}
    GET    uploads/?state=receiving     your sessions (resume: match file name and size)
    GET    uploads/<id>/                one session with its chunk table
    PUT    uploads/<id>/chunks/<i>/     raw bytes, X-Content-SHA256 header
    POST   uploads/<id>/finish/         all chunks there: the file's SHA-256
    DELETE uploads/<id>/                cancel (the received bytes are removed)

Then the app takes the file, e.g. `POST /api/v1/slides/ {"project": 3, "upload": <id>}`.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from portal.api.base import PortalViewSetMixin
from storage.api.views import BYTE_RENDERERS, HASH_HEADER, RawChunkParser, StorageErrorsMixin, read_chunk_body
from storage.models import UploadChunk, UploadSession, UploadState
from storage.services import sessions


class UploadChunkSerializer(serializers.ModelSerializer):
    class Meta:
        model = UploadChunk
        fields = ["index", "size", "sha256"]
        read_only_fields = fields


class UploadSessionSerializer(serializers.ModelSerializer):
    chunk_count = serializers.IntegerField(read_only=True)
    received = serializers.SerializerMethodField(help_text="How many chunks arrived.")
    sha256 = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="Optional at the start: the whole file's hash.",
    )

    class Meta:
        model = UploadSession
        fields = [
            "id",
            "purpose",
            "file_name",
            "size",
            "chunk_size",
            "chunk_count",
            "received",
            "sha256",
            "state",
            "used_by",
            "created_at",
            "updated_at",
            "expires_at",
            "completed_at",
        ]
        read_only_fields = ["state", "used_by", "created_at", "updated_at", "expires_at", "completed_at"]
        extra_kwargs = {"chunk_size": {"required": False}}

    def get_received(self, session) -> int:
        return getattr(session, "received_chunks", None) or session.chunks.count()

    def to_representation(self, session):
        data = super().to_representation(session)
        data["sha256"] = session.sha256 or session.expected_sha256
        return data


class UploadSessionDetailSerializer(UploadSessionSerializer):
    chunks = UploadChunkSerializer(many=True, read_only=True)

    class Meta(UploadSessionSerializer.Meta):
        fields = [*UploadSessionSerializer.Meta.fields, "chunks"]


class UploadSessionViewSet(
    StorageErrorsMixin,
    PortalViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Your plain chunked uploads (slides, DICOM): start, send chunks, finish, resume, cancel."""

    queryset = UploadSession.objects.all()
    serializer_class = UploadSessionSerializer
    action_permissions = {"put_chunk": "change", "finish": "change"}

    def get_serializer_class(self):
        return UploadSessionDetailSerializer if self.action == "retrieve" else UploadSessionSerializer

    def get_queryset(self):
        found = super().get_queryset().filter(owner=self.request.user)  # admins too: one's own uploads
        if self.action == "list":
            state = self.request.query_params.get("state")
            if state:
                if state not in UploadState.values:
                    raise exceptions.ValidationError({"state": [f"One of {', '.join(UploadState.values)}."]})
                found = found.filter(state=state)
            purpose = self.request.query_params.get("purpose")
            if purpose:
                found = found.filter(purpose=purpose)
        return found

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, enum=UploadState.values),
            OpenApiParameter("purpose", str),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=UploadSessionSerializer, responses={201: UploadSessionSerializer})
    def create(self, request, *args, **kwargs):
        body = UploadSessionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        session = sessions.start_session(
            owner=request.user,
            file_name=data["file_name"],
            size=data["size"],
            purpose=data["purpose"],
            chunk_size=data.get("chunk_size"),
            sha256=data.get("sha256") or None,
        )
        return Response(UploadSessionSerializer(session).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        sessions.cancel_session(instance)

    @extend_schema(
        request={"application/octet-stream": OpenApiTypes.BINARY},
        parameters=[OpenApiParameter(HASH_HEADER, str, OpenApiParameter.HEADER, required=True)],
        responses=UploadChunkSerializer,
    )
    @action(
        detail=True,
        methods=["put"],
        url_path=r"chunks/(?P<index>\d+)",
        parser_classes=[RawChunkParser],
        renderer_classes=BYTE_RENDERERS,
    )
    def put_chunk(self, request, pk=None, index=None):
        session = self.get_object()
        data = read_chunk_body(request, session.chunk_size, "upload")
        chunk = sessions.put_chunk(session, int(index), data, request.headers.get(HASH_HEADER, ""))
        return Response(UploadChunkSerializer(chunk).data)

    @extend_schema(request=None, responses=UploadSessionSerializer)
    @action(detail=True, methods=["post"])
    def finish(self, request, pk=None):
        """All chunks arrived: the server checks them once more and computes the file's SHA-256."""
        session = sessions.finish_session(self.get_object())
        return Response(UploadSessionSerializer(session).data)
