"""The upload-link API: managing your links, and the upload-only endpoints that a link opens.

Management (signed in, your own links; administrators may see and revoke everyone's):

    GET/POST /api/v1/upload-links/            list / create (the secret and URL are answered once)
    GET      /api/v1/upload-links/<id>/       one link
    POST     /api/v1/upload-links/<id>/revoke/
    GET      /api/v1/upload-links/<id>/uses/  the datasets started through it

Uploading with a link (no account: the link's secret in the `X-Upload-Token` header, nothing else;
session cookies and bearer tokens are ignored here, so the endpoints act only as the link):

    GET  /api/v1/upload-links/upload/                           what the link takes (label, limits)
    POST /api/v1/upload-links/upload/datasets/                  start a file → its `upload` id
    GET  /api/v1/upload-links/upload/datasets/<upload>/chunks/  chunks stored so far (resume)
    PUT  /api/v1/upload-links/upload/datasets/<upload>/chunks/<index>/   one chunk, raw bytes
    POST /api/v1/upload-links/upload/datasets/<upload>/finish/

A link reaches only the unfinished uploads started through it (by their signed `upload` id), and
no dataset endpoint accepts its secret: it cannot list, read or download anything.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import path, reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from portal.api.base import PortalViewSetMixin, StrictSerializer
from storage.api.serializers import StartUploadSerializer
from storage.api.views import HASH_HEADER, RawChunkParser, StorageErrorsMixin
from storage.models import Chunk, Dataset, UploadLink
from storage.services import links, uploads
from storage.services.errors import StorageError

TOKEN_HEADER = "X-Upload-Token"  # noqa: S105 - a header name


# --- serializers ------------------------------------------------------------------------------------


class LinkSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    state = serializers.SerializerMethodField()
    remaining_bytes = serializers.SerializerMethodField()
    remaining_files = serializers.SerializerMethodField()

    class Meta:
        model = UploadLink
        fields = [
            "id",
            "owner",
            "label",
            "prefix",
            "state",
            "expires_at",
            "max_bytes",
            "max_files",
            "used_bytes",
            "used_files",
            "remaining_bytes",
            "remaining_files",
            "revoked_at",
            "created_at",
            "last_used_at",
        ]

    def get_state(self, link) -> str:
        """active, expired or revoked."""
        return links.link_state(link)

    def get_remaining_bytes(self, link) -> int | None:
        return links.remaining(link)["bytes"]

    def get_remaining_files(self, link) -> int | None:
        return links.remaining(link)["files"]


class NewLinkSerializer(LinkSerializer):
    token = serializers.CharField(help_text="The link's secret: shown only now.")
    url = serializers.CharField(help_text="The upload page's address (contains the secret).")

    class Meta(LinkSerializer.Meta):
        fields = [*LinkSerializer.Meta.fields, "token", "url"]


class CreateLinkSerializer(StrictSerializer):
    label = serializers.CharField(max_length=links.LABEL_MAX, help_text="So you recognise its uploads.")
    expires_at = serializers.DateTimeField()
    max_bytes = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Total of the files' sizes; none: no limit."
    )
    max_files = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Files that may be started; none: no limit."
    )


class LinkUseSerializer(serializers.ModelSerializer):
    class Meta:
        model = Dataset
        fields = ["mnemonic", "name", "file_name", "size", "state", "sha256", "created_at", "completed_at"]


class LinkInfoSerializer(serializers.Serializer):
    label = serializers.CharField()
    owner = serializers.CharField(help_text="Who the data is for (their display name).")
    expires_at = serializers.DateTimeField()
    chunk_size = serializers.IntegerField(help_text="The chunk size to use unless you choose one.")
    remaining_bytes = serializers.IntegerField(allow_null=True)
    remaining_files = serializers.IntegerField(allow_null=True)


class LinkStartSerializer(StartUploadSerializer):
    project = None  # an anonymous uploader chooses no project


class LinkUploadSerializer(serializers.ModelSerializer):
    upload = serializers.SerializerMethodField(help_text="The id of this upload, for the next requests.")
    chunk_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Dataset
        fields = ["upload", "name", "file_name", "size", "chunk_size", "chunk_count", "state", "sha256"]

    def get_upload(self, dataset) -> str:
        return links.upload_handle(self.context["link"], dataset)


class LinkChunkSerializer(serializers.ModelSerializer):
    class Meta:
        model = Chunk
        fields = ["index", "size", "sha256"]


# --- managing links -----------------------------------------------------------------------------------


class UploadLinkViewSet(
    StorageErrorsMixin,
    PortalViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Your upload links: someone with a link uploads data for you without an account. Create
    one (its secret and address are answered only then), see its uses, revoke it."""

    queryset = UploadLink.objects.select_related("owner")
    serializer_class = LinkSerializer
    lookup_value_regex = r"\d+"
    action_permissions = {"revoke": "change"}

    def get_queryset(self):
        found = super().get_queryset()
        if self.action == "list" and not (
            self.request.user.is_staff and self.request.query_params.get("all")
        ):
            found = found.filter(owner=self.request.user)
        return found

    @extend_schema(request=CreateLinkSerializer, responses={201: NewLinkSerializer})
    def create(self, request):
        data = CreateLinkSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        link, token = links.create_link(
            request.user,
            label=v["label"],
            expires_at=v["expires_at"],
            max_bytes=v.get("max_bytes"),
            max_files=v.get("max_files"),
            request=request,
        )
        body = LinkSerializer(link).data
        body["token"] = token
        body["url"] = request.build_absolute_uri(reverse("storage-links:link-upload", args=[token]))
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=LinkSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        self.ensure_no_body()
        link = links.revoke_link(self.get_object(), actor=request.user, request=request)
        return Response(LinkSerializer(link).data)

    @extend_schema(responses=LinkUseSerializer(many=True))
    @action(detail=True, methods=["get"])
    def uses(self, request, pk=None):
        """The datasets started through this link (they are the link owner's)."""
        link = self.get_object()
        return Response(LinkUseSerializer(link.datasets.order_by("-created_at", "-id")[:500], many=True).data)


# --- uploading with a link ------------------------------------------------------------------------------

TOKEN_PARAMETER = OpenApiParameter(
    TOKEN_HEADER, str, OpenApiParameter.HEADER, required=True, description="The upload link's secret."
)


class LinkUploadView(StorageErrorsMixin, APIView):
    """Base of the endpoints a link opens: no other authentication counts here, only the link."""

    authentication_classes: list = []
    permission_classes: list = []
    operation = ""

    def link(self, request) -> links.UploadLink:
        return links.authenticate_link(
            request.headers.get(TOKEN_HEADER), request=request, operation=self.operation
        )

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        return response


class LinkInfoView(LinkUploadView):
    operation = "info"

    @extend_schema(parameters=[TOKEN_PARAMETER], responses=LinkInfoSerializer, auth=[])
    def get(self, request):
        """What this link takes: its label, for whom, until when, and how much more."""
        link = self.link(request)
        links.record_use(link, "info", request=request)
        left = links.remaining(link)
        return Response(
            LinkInfoSerializer(
                {
                    "label": link.label,
                    "owner": link.owner.get_full_name() or link.owner.get_username(),
                    "expires_at": link.expires_at,
                    "chunk_size": settings.STORAGE_CHUNK_SIZE,
                    "remaining_bytes": left["bytes"],
                    "remaining_files": left["files"],
                }
            ).data
        )


class LinkStartView(LinkUploadView):
    operation = "start"

    @extend_schema(
        parameters=[TOKEN_PARAMETER],
        request=LinkStartSerializer,
        responses={201: LinkUploadSerializer},
        auth=[],
    )
    def post(self, request):
        """Start a file: it is encrypted for the link owner's keys. Nothing about the owner's other
        data is answered (no duplicate check)."""
        body = request.data  # parsed first: a malformed or oversized body is refused before anything else
        link = self.link(request)
        data = LinkStartSerializer(data=body)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        dataset = links.start_link_upload(
            link,
            name=v["name"],
            file_name=v["file_name"],
            size=v["size"],
            chunk_size=v.get("chunk_size"),
            first_chunk_sha256=v["first_chunk_sha256"].lower(),
            description=v["description"],
            request=request,
        )
        return Response(
            LinkUploadSerializer(dataset, context={"link": link}).data, status=status.HTTP_201_CREATED
        )


class LinkChunksView(LinkUploadView):
    operation = "chunks"

    @extend_schema(parameters=[TOKEN_PARAMETER], responses=LinkChunkSerializer(many=True), auth=[])
    def get(self, request, upload: str):
        """The chunks of this upload stored so far (index, size, SHA-256): send the others."""
        link = self.link(request)
        dataset = links.dataset_of(link, upload)
        links.record_use(link, "chunks", request=request, dataset=dataset)
        return Response(LinkChunkSerializer(uploads.chunk_table(dataset), many=True).data)


class LinkChunkView(LinkUploadView):
    operation = "chunk"
    parser_classes = [RawChunkParser]

    @extend_schema(
        parameters=[
            TOKEN_PARAMETER,
            OpenApiParameter(HASH_HEADER, str, OpenApiParameter.HEADER, required=True),
        ],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses=LinkChunkSerializer,
        auth=[],
    )
    def put(self, request, upload: str, index: str):
        """One chunk's plaintext (raw bytes) with its SHA-256 in the X-Content-SHA256 header."""
        if (request.content_type or "").split(";")[0].strip() != RawChunkParser.media_type:
            raise exceptions.UnsupportedMediaType(
                request.content_type, detail="Send the chunk as raw bytes (application/octet-stream)."
            )
        link = self.link(request)
        dataset = links.dataset_of(link, upload)
        if not index.isascii() or not index.isdigit():
            raise StorageError("The chunk index is a number.", code="invalid_index")
        limit = dataset.chunk_size
        length = request.META.get("CONTENT_LENGTH") or ""
        too_large = StorageError(
            f"A chunk of this upload is at most {limit:,} bytes.", code="too_large", status=413
        )
        if length.isascii() and length.isdigit() and int(length) > limit:
            raise too_large
        data = request._request.read(limit + 1)
        if len(data) > limit:
            raise too_large
        chunk = links.put_link_chunk(
            link, dataset, int(index), data, request.headers.get(HASH_HEADER, ""), request=request
        )
        return Response(LinkChunkSerializer(chunk).data)


class EmptySerializer(StrictSerializer):
    pass


class LinkFinishView(LinkUploadView):
    operation = "finish"

    @extend_schema(
        parameters=[TOKEN_PARAMETER], request=EmptySerializer, responses=LinkUploadSerializer, auth=[]
    )
    def post(self, request, upload: str):
        """Every chunk is stored: complete the upload. It belongs to the link's owner from now on,
        and this link no longer reaches it."""
        body = request.data
        link = self.link(request)
        EmptySerializer(data=body).is_valid(raise_exception=True)
        dataset = links.dataset_of(link, upload)
        dataset = links.finish_link_upload(link, dataset, request=request)
        return Response(LinkUploadSerializer(dataset, context={"link": link}).data)


router = SimpleRouter()
router.register("upload-links", UploadLinkViewSet, basename="uploadlink")

urlpatterns = [
    path("upload-links/upload/", LinkInfoView.as_view(), name="link-upload-info"),
    path("upload-links/upload/datasets/", LinkStartView.as_view(), name="link-upload-start"),
    path(
        "upload-links/upload/datasets/<str:upload>/chunks/",
        LinkChunksView.as_view(),
        name="link-upload-chunks",
    ),
    path(
        "upload-links/upload/datasets/<str:upload>/chunks/<str:index>/",
        LinkChunkView.as_view(),
        name="link-upload-chunk",
    ),
    path(
        "upload-links/upload/datasets/<str:upload>/finish/",
        LinkFinishView.as_view(),
        name="link-upload-finish",
    ),
    *router.urls,
]
