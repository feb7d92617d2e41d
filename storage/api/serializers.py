"""Serializers of the storage API; fields listed explicitly."""

from __future__ import annotations

import base64

from django.contrib.auth import get_user_model
from rest_framework import serializers

from portal.api.base import StrictModelSerializer, StrictSerializer
from storage.models import Chunk, Dataset, Grant, GrantLevel, KeyWrap, RootKey, UploadLink, UserKey


class UserKeySerializer(StrictModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = UserKey
        fields = [
            "id",
            "user",
            "name",
            "public_key",
            "fingerprint",
            "state",
            "created_at",
            "activated_at",
            "revoked_at",
        ]
        read_only_fields = ["fingerprint", "state", "created_at", "activated_at", "revoked_at"]
        extra_kwargs = {
            "public_key": {"help_text": "PEM (SPKI), an ssh-rsa line or a JWK of an RSA-4096 key."}
        }


class RootKeySerializer(StrictModelSerializer):
    class Meta:
        model = RootKey
        fields = ["id", "name", "public_key", "fingerprint", "active", "created_at"]
        read_only_fields = ["fingerprint", "created_at"]


class DatasetSerializer(StrictModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    chunk_count = serializers.IntegerField(read_only=True)
    access = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = [
            "mnemonic",
            "name",
            "file_name",
            "description",
            "project",
            "state",
            "size",
            "chunk_size",
            "chunk_count",
            "sha256",
            "first_chunk_sha256",
            "key_fingerprint",
            "generation",
            "owner",
            "access",
            "created_at",
            "completed_at",
            "deleted_at",
            "purge_after",
            "sealed_until",
        ]
        read_only_fields = [
            "mnemonic",
            "file_name",
            "state",
            "size",
            "chunk_size",
            "sha256",
            "first_chunk_sha256",
            "key_fingerprint",
            "generation",
            "created_at",
            "completed_at",
            "deleted_at",
            "purge_after",
            "sealed_until",
        ]

    def get_access(self, dataset) -> str | None:
        """The requesting user's grant: read, write or null (admins see datasets without one)."""
        levels = self.context.get("levels")
        if levels is not None:
            return levels.get(dataset.pk)
        request = self.context.get("request")
        grant = dataset.grants.filter(user=request.user).first() if request else None
        return grant.level if grant else None


class StartUploadSerializer(StrictSerializer):
    name = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    file_name = serializers.CharField(max_length=255)
    size = serializers.IntegerField(min_value=0)
    chunk_size = serializers.IntegerField(required=False, min_value=1)
    first_chunk_sha256 = serializers.RegexField(
        r"^[0-9a-fA-F]{64}$", required=False, allow_blank=True, default=""
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    project = serializers.IntegerField(required=False, allow_null=True, default=None)

    def validate_file_name(self, value: str) -> str:
        if "/" in value or "\\" in value or value in (".", "..") or "\x00" in value:
            raise serializers.ValidationError("A file name, without folders (archive folders before upload).")
        return value


class DuplicateSerializer(serializers.ModelSerializer):
    class Meta:
        model = Dataset
        fields = ["mnemonic", "name", "file_name", "size", "sha256", "created_at"]


def chunk_data(chunk) -> dict:
    return {
        "index": chunk.index,
        "size": chunk.size,
        "stored_size": chunk.stored_size,
        "sha256": chunk.sha256,
        "nonce": base64.b64encode(bytes(chunk.nonce)).decode("ascii"),
    }


class ChunkSerializer(serializers.ModelSerializer):
    nonce = serializers.SerializerMethodField()

    class Meta:
        model = Chunk
        fields = ["index", "size", "stored_size", "sha256", "nonce"]

    def get_nonce(self, chunk) -> str:
        return chunk_data(chunk)["nonce"]

    def to_representation(self, chunk) -> dict:
        # Every uploaded chunk is answered with this: a plain dict of the same fields, without
        # the field machinery (which cost more than a tenth of a small request).
        return chunk_data(chunk)


class KeySerializer(StrictSerializer):
    key = serializers.CharField(help_text="The dataset's data key, base64 (or hex) of 32 bytes.")


class FinishSerializer(StrictSerializer):
    key = serializers.CharField(required=False, help_text="Only needed after the upload's kept key expired.")


class WrapSerializer(serializers.ModelSerializer):
    key_id = serializers.IntegerField(source="user_key_id")
    key_name = serializers.CharField(source="user_key.name")
    key_fingerprint = serializers.CharField(source="user_key.fingerprint")
    wrapped = serializers.SerializerMethodField()

    class Meta:
        model = KeyWrap
        fields = ["key_id", "key_name", "key_fingerprint", "generation", "wrapped"]

    def get_wrapped(self, wrap) -> str:
        return base64.b64encode(bytes(wrap.wrapped)).decode("ascii")


class GrantSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username")
    user_id = serializers.IntegerField()
    granted_by = serializers.CharField(source="granted_by.username", default=None)

    class Meta:
        model = Grant
        fields = ["user_id", "user", "level", "granted_by", "created_at"]


class ShareSerializer(StrictSerializer):
    user = serializers.CharField(help_text="User name (or id) of the recipient.")
    level = serializers.ChoiceField(choices=GrantLevel.choices, default=GrantLevel.READ)
    key = serializers.CharField(help_text="The data key, unwrapped by your client: base64 of 32 bytes.")

    def validate_user(self, value: str):
        users = get_user_model().objects.filter(is_active=True)
        found = users.filter(username=value).first()
        if found is None and value.isascii() and value.isdigit():
            found = users.filter(pk=int(value)).first()
        if found is None:
            raise serializers.ValidationError("No such user.")
        return found


class UploadLinkSerializer(serializers.ModelSerializer):
    class Meta:
        model = UploadLink
        fields = [
            "id",
            "label",
            "prefix",
            "expires_at",
            "max_bytes",
            "max_files",
            "used_bytes",
            "used_files",
            "revoked_at",
            "created_at",
            "last_used_at",
        ]
