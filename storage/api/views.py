"""The storage API: keys, root keys, datasets (chunked upload, resume, download, sharing, bin).

Datasets are addressed by mnemonic: `/api/v1/datasets/<mnemonic>/…`. The base viewset filters
every queryset with `for_user()`: strangers get 404, readers may read, write holders change. Data
itself (chunks, wraps, decrypted content, sharing) also needs a grant – portal admins see every
dataset's description but not its data unless someone shared it with them.
"""

from __future__ import annotations

import json

from django.db.models import Q
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from metadata.models import Project
from metadata.querysets import has_project_role
from portal.api.base import PortalViewSetMixin
from portal.services.audit import record_audit_event
from storage.api import serializers as s
from storage.models import Dataset, DatasetState, Grant, GrantLevel, RootKey, UserKey
from storage.services import access, chunkstore, downloads, keys, lifecycle, uploads
from storage.services.datasets import update_details
from storage.services.errors import StorageError

KEY_HEADER = "X-Dataset-Key"
HASH_HEADER = "X-Content-SHA256"


class StorageErrorsMixin:
    """Service errors become `{"detail", "code"}` with the status each error names."""

    def handle_exception(self, exc):
        if isinstance(exc, StorageError):
            return Response({"detail": exc.message, "code": exc.code}, status=exc.status)
        return super().handle_exception(exc)


def streamed(request, pieces):
    """Under ASGI, Django buffers a synchronous iterator whole before sending it (a 4 GiB download
    would sit in the web process's memory); an asynchronous one that decrypts each chunk in a
    thread is sent chunk by chunk. The pieces read files only, no database."""
    from asgiref.sync import sync_to_async
    from django.core.handlers.asgi import ASGIRequest

    if not isinstance(getattr(request, "_request", request), ASGIRequest):
        return pieces

    async def stream():
        iterator = iter(pieces)
        while (piece := await sync_to_async(next, thread_sensitive=False)(iterator, None)) is not None:
            yield piece

    return stream()


def supplied_key(request, *, required: bool) -> bytes | None:
    text = request.headers.get(KEY_HEADER)
    if text is None:
        if required:
            raise StorageError(
                f"Send the dataset's key in the {KEY_HEADER} header (base64 of 32 bytes).",
                code="key_required",
            )
        return None
    return access.decode_key(text)


# --- keys -----------------------------------------------------------------------------------------


class UserKeyViewSet(
    StorageErrorsMixin,
    PortalViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Your public keys (admins: everyone's, to activate them). Register with POST; revoke or
    activate with the actions."""

    queryset = UserKey.objects.select_related("user")
    serializer_class = s.UserKeySerializer
    action_permissions = {"revoke": "change", "activate": "change"}

    def get_queryset(self):
        found = super().get_queryset()
        if self.action == "list":
            state = self.request.query_params.get("state")
            if state:
                found = found.filter(state=state)
            if self.request.query_params.get("mine"):  # (for_user already limits others to theirs)
                found = found.filter(user=self.request.user)
        return found

    def perform_create(self, serializer):
        serializer.instance = keys.register_user_key(
            self.request.user,
            serializer.validated_data["name"],
            serializer.validated_data["public_key"],
            request=self.request,
        )

    @extend_schema(request=None, responses=s.UserKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        self.ensure_no_body()
        key = self.get_object()
        keys.revoke_user_key(key, actor=request.user, request=request)
        key.refresh_from_db()
        return Response(self.get_serializer(key).data)

    @extend_schema(request=None, responses=s.UserKeySerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None):
        self.ensure_no_body()
        key = self.get_object()
        if not request.user.is_staff:
            raise exceptions.PermissionDenied("Only administrators activate keys.")
        keys.activate_user_key(key, actor=request.user, request=request)
        return Response(self.get_serializer(key).data)


class RootKeyViewSet(
    StorageErrorsMixin,
    PortalViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """The operator's recovery keys (administrators only): every dataset key is also wrapped for
    each active one."""

    queryset = RootKey.objects.all()
    serializer_class = s.RootKeySerializer
    staff_only = True

    def perform_create(self, serializer):
        serializer.instance = keys.add_root_key(
            serializer.validated_data["name"],
            serializer.validated_data["public_key"],
            actor=self.request.user,
        )

    def perform_update(self, serializer):
        if "public_key" in serializer.validated_data:
            raise exceptions.ValidationError({"public_key": ["A root key cannot change; add a new one."]})
        serializer.save()


# --- datasets -----------------------------------------------------------------------------------------


class BinaryRenderer(BaseRenderer):
    """Lets clients ask for `application/octet-stream` where bytes are served (chunks, content);
    the bytes bypass it, and errors are still rendered as JSON text."""

    media_type = "application/octet-stream"
    format = "bin"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else json.dumps(data).encode()


BYTE_RENDERERS = [JSONRenderer, BinaryRenderer]


def read_chunk_body(request, limit: int, what: str) -> bytes:
    """A chunk PUT's raw body, refused with 413 when it is larger than the upload's chunks."""
    message = f"A chunk of this {what} is at most {limit:,} bytes."
    too_large = StorageError(message, code="too_large", status=413)
    length = request.META.get("CONTENT_LENGTH") or ""
    if length.isascii() and length.isdigit() and int(length) > limit:
        raise too_large
    data = request._request.read(limit + 1)
    if len(data) > limit:
        raise too_large
    return data


class RawChunkParser(BaseParser):
    """Chunk bodies are raw bytes; they are read by the view itself, never parsed."""

    media_type = "application/octet-stream"

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover - never used
        return {}


class DatasetViewSet(
    StorageErrorsMixin,
    PortalViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Encrypted datasets you hold a grant on. POST starts an upload; PUT
    `chunks/<index>/` sends a chunk; `finish/` completes it; `content/` downloads decrypted."""

    queryset = Dataset.objects.select_related("owner")
    serializer_class = s.DatasetSerializer
    lookup_field = "mnemonic"
    lookup_value_regex = r"[a-z]+_[a-z]+_[a-z]+"
    action_permissions = {
        "finish": "change",
        "put_chunk": "change",
        "supply_key": "change",
        "restore": "delete",
        "share": "view",
        "revoke": "view",
    }

    def get_queryset(self):
        found = super().get_queryset()
        if self.action == "list":
            params = self.request.query_params
            state = params.get("state")
            if state:
                if state not in DatasetState.values:
                    raise exceptions.ValidationError({"state": [f"One of {', '.join(DatasetState.values)}."]})
                found = found.filter(state=state)
            else:
                found = found.exclude(state__in=[DatasetState.DELETED, DatasetState.PURGED])
            if params.get("q"):
                q = params["q"]
                found = found.filter(
                    Q(name__icontains=q) | Q(file_name__icontains=q) | Q(mnemonic__icontains=q)
                )
            if params.get("project"):
                project = params["project"]
                if not project.isascii() or not project.isdigit():
                    raise exceptions.ValidationError({"project": ["A project id."]})
                found = found.filter(project_id=int(project))
            if params.get("mine"):
                found = found.filter(owner=self.request.user)
        return found

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.action == "list" and self.request.user.is_authenticated:
            context["levels"] = dict(
                Grant.objects.filter(user=self.request.user).values_list("dataset_id", "level")
            )
        return context

    def _project(self, project_id):
        if project_id is None:
            return None
        project = Project.objects.filter(pk=project_id).first()
        if project is None or not has_project_role(self.request.user, project, "writer"):
            raise exceptions.ValidationError({"project": ["No such project where you may add data."]})
        return project

    @extend_schema(request=s.StartUploadSerializer, responses={201: s.DatasetSerializer})
    def create(self, request):
        data = s.StartUploadSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        dataset = uploads.start_upload(
            owner=request.user,
            uploaded_by=request.user,
            name=v["name"],
            file_name=v["file_name"],
            size=v["size"],
            chunk_size=v.get("chunk_size"),
            first_chunk_sha256=v["first_chunk_sha256"].lower(),
            description=v["description"],
            project=self._project(v["project"]),
            request=request,
        )
        body = s.DatasetSerializer(dataset, context={"request": request}).data
        body["duplicates"] = s.DuplicateSerializer(
            [
                d
                for d in uploads.duplicates_of(request.user, dataset.first_chunk_sha256)
                if d.pk != dataset.pk
            ],
            many=True,
        ).data
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer):
        changes = dict(serializer.validated_data)
        project = changes.get("project", serializer.instance.project)
        if project != serializer.instance.project:
            self._project(project.pk if project else None)
        update_details(serializer.instance, changes, actor=self.request.user, request=self.request)

    def destroy(self, request, mnemonic=None):
        dataset = self.get_object()
        lifecycle.delete_dataset(dataset, actor=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=s.DatasetSerializer)
    @action(detail=True, methods=["post"])
    def restore(self, request, mnemonic=None):
        self.ensure_no_body()
        dataset = lifecycle.restore_dataset(self.get_object(), actor=request.user, request=request)
        return Response(s.DatasetSerializer(dataset, context={"request": request}).data)

    @extend_schema(
        parameters=[OpenApiParameter("first_chunk_sha256", str, required=True)],
        responses=s.DuplicateSerializer(many=True),
    )
    @action(detail=False, methods=["get"])
    def duplicates(self, request):
        """Datasets you can read whose first chunk has this SHA-256: compare their full hash with
        your file's before uploading it again."""
        sha = uploads.check_hash(request.query_params.get("first_chunk_sha256", ""), "first chunk's hash")
        return Response(s.DuplicateSerializer(uploads.duplicates_of(request.user, sha), many=True).data)

    # --- chunks -----------------------------------------------------------------------------

    @extend_schema(responses=s.ChunkSerializer(many=True))
    @action(detail=True, methods=["get"])
    def chunks(self, request, mnemonic=None):
        """The stored chunks (index, sizes, plaintext SHA-256, nonce): what an interrupted upload
        still needs, and what a client needs to decrypt."""
        dataset = self.get_object()
        access.require_grant(request.user, dataset)
        return Response(s.ChunkSerializer(uploads.chunk_table(dataset), many=True).data)

    @extend_schema(
        request={"application/octet-stream": OpenApiTypes.BINARY},
        parameters=[
            OpenApiParameter(HASH_HEADER, str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter(
                KEY_HEADER,
                str,
                OpenApiParameter.HEADER,
                description="Only after the upload's kept key expired.",
            ),
        ],
        responses=s.ChunkSerializer,
    )
    @action(
        detail=True,
        methods=["put"],
        url_path=r"chunks/(?P<index>\d+)",
        parser_classes=[RawChunkParser],
        renderer_classes=BYTE_RENDERERS,
    )
    def put_chunk(self, request, mnemonic=None, index=None):
        # The common case in one query (a write grant is exactly what both checks below ask for);
        # anything else goes the usual way, for the usual 404 or 403.
        dataset = Dataset.objects.filter(
            mnemonic=mnemonic, grants__user=request.user, grants__level=GrantLevel.WRITE
        ).first()
        if dataset is None:
            dataset = self.get_object()
            access.require_grant(request.user, dataset, GrantLevel.WRITE)
        data = read_chunk_body(request, dataset.chunk_size, "dataset")
        if not index.isascii() or not index.isdigit():
            raise StorageError("The chunk index is a number.", code="invalid_index")
        chunk = uploads.put_chunk(
            dataset,
            int(index),
            data,
            request.headers.get(HASH_HEADER, ""),
            key=supplied_key(request, required=False),
        )
        return Response(s.ChunkSerializer(chunk).data, status=status.HTTP_200_OK)

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    @put_chunk.mapping.get
    def get_chunk(self, request, mnemonic=None, index=None):
        """One stored chunk's ciphertext and tag, for decrypting in the client (grant holders)."""
        dataset = self.get_object()
        access.require_grant(request.user, dataset)
        downloads.readable(dataset)
        chunk = dataset.chunks.filter(generation=dataset.generation, index=int(index)).first()
        if chunk is None:
            raise exceptions.NotFound("No such chunk.")
        try:
            data = chunkstore.read_chunk(dataset, chunk.index, chunk.generation)
        except FileNotFoundError:
            raise downloads.IntegrityFailureError(dataset, chunk.index, "its file is missing") from None
        response = HttpResponse(data, content_type="application/octet-stream")
        response["X-Chunk-Nonce"] = s.ChunkSerializer(chunk).data["nonce"]
        # A re-key may switch generations between a client's requests: it compares this with the
        # generation of the wrap it unwrapped, and starts over on a mismatch.
        response["X-Key-Generation"] = str(chunk.generation)
        response["Cache-Control"] = "private, no-store"
        return response

    @extend_schema(request=s.FinishSerializer, responses=s.DatasetSerializer)
    @action(detail=True, methods=["post"])
    def finish(self, request, mnemonic=None):
        data = s.FinishSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = access.decode_key(data.validated_data["key"]) if "key" in data.validated_data else None
        dataset = self.get_object()
        access.require_grant(request.user, dataset, GrantLevel.WRITE)
        dataset = uploads.finish_upload(dataset, key=key, actor=request.user, request=request)
        return Response(s.DatasetSerializer(dataset, context={"request": request}).data)

    @extend_schema(request=s.KeySerializer, responses=s.DatasetSerializer)
    @action(detail=True, methods=["post"], url_path="key")
    def supply_key(self, request, mnemonic=None):
        """Resume an upload whose kept key expired: send the key (your client unwraps it); it is
        checked by fingerprint and kept sealed again."""
        data = s.KeySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = self.get_object()
        access.require_grant(request.user, dataset, GrantLevel.WRITE)
        if dataset.state != DatasetState.UPLOADING:
            raise StorageError(
                "Only an unfinished upload needs its key supplied.", code="conflict", status=409
            )
        uploads.upload_key(dataset, access.decode_key(data.validated_data["key"]))
        dataset.refresh_from_db()
        return Response(s.DatasetSerializer(dataset, context={"request": request}).data)

    @extend_schema(responses=s.WrapSerializer(many=True))
    @action(detail=True, methods=["get"])
    def wraps(self, request, mnemonic=None):
        """The data key wrapped for each of your active keys: unwrap one with your private key."""
        dataset = self.get_object()
        access.require_grant(request.user, dataset)
        wraps = access.wraps_for(request.user, dataset)
        record_audit_event(  # a client fetches its wraps to decrypt, share or re-key
            "storage.key_fetched", actor=request.user, request=request, obj=dataset, wraps=len(wraps)
        )
        return Response(s.WrapSerializer(wraps, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(KEY_HEADER, str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("Range", str, OpenApiParameter.HEADER),
        ],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], renderer_classes=BYTE_RENDERERS)
    def content(self, request, mnemonic=None):
        """The decrypted file, streamed; every chunk's tag is checked (Range requests work). Send
        the data key (unwrapped by your client) in the X-Dataset-Key header, over HTTPS."""
        dataset = self.get_object()
        access.require_grant(request.user, dataset)
        key = supplied_key(request, required=True)
        downloads.readable(dataset)
        access.check_key(dataset, key)
        byte_range = downloads.parse_range(request.headers.get("Range"), dataset.size)
        pieces = downloads.plaintext(dataset, key, byte_range)
        response = StreamingHttpResponse(
            streamed(request, pieces),
            content_type="application/octet-stream",
            status=206 if byte_range else 200,
        )
        length = byte_range.length if byte_range else dataset.size
        response["Content-Length"] = str(length)
        response["Accept-Ranges"] = "bytes"
        if byte_range:
            response["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{dataset.size}"
        response["Content-Disposition"] = f'attachment; filename="{dataset.file_name}"'
        response["Cache-Control"] = "private, no-store"
        record_audit_event(
            "storage.downloaded",
            actor=request.user,
            request=request,
            obj=dataset,
            range=request.headers.get("Range") or None,
        )
        return response

    # --- sharing ----------------------------------------------------------------------------

    @extend_schema(responses=s.GrantSerializer(many=True))
    @action(detail=True, methods=["get"])
    def grants(self, request, mnemonic=None):
        """Who holds which grant on the dataset."""
        dataset = self.get_object()
        found = dataset.grants.select_related("user", "granted_by").order_by("created_at", "id")
        return Response(s.GrantSerializer(found, many=True).data)

    @extend_schema(request=s.ShareSerializer, responses={201: s.GrantSerializer})
    @grants.mapping.post
    def share(self, request, mnemonic=None):
        """Grant a user read or write: send the data key your client unwrapped; the server checks
        its fingerprint (a wrong key: 403, nothing stored) and wraps it for the user's keys."""
        dataset = self.get_object()
        data = s.ShareSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        grant = access.share_dataset(
            dataset,
            actor=request.user,
            recipient=v["user"],
            level=v["level"],
            key=access.decode_key(v["key"]),
            request=request,
        )
        return Response(s.GrantSerializer(grant).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"grants/(?P<user_id>\d+)")
    def revoke(self, request, mnemonic=None, user_id=None):
        """Take a user's grant and wraps away; re-key afterwards so a key they kept opens nothing."""
        dataset = self.get_object()
        grant = dataset.grants.filter(user_id=int(user_id)).select_related("user").first()
        if grant is None:
            raise exceptions.NotFound("This user has no grant on the dataset.")
        access.revoke_grant(dataset, actor=request.user, recipient=grant.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)
