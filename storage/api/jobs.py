"""Dataset jobs through the API: re-key (`POST datasets/<m>/rekey/`) and scrub (`…/scrub/`).

Both answer 202 with the job (as `GET /api/v1/jobs/<id>/` shows it), whose progress the client
follows there or on the `/ws/jobs/` websocket. The dataset key a client sends is checked by
fingerprint here and reaches the worker only sealed.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api.base import StrictSerializer
from portal.api.serializers import JobSerializer
from storage.api.views import StorageErrorsMixin
from storage.models import Dataset
from storage.services import access, rekey, scrub


class RekeySerializer(StrictSerializer):
    key = serializers.CharField(
        help_text="The dataset's current data key (your client unwrapped it): base64 or hex."
    )
    rate_limit_mb_s = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=0.1,
        max_value=100000,
        help_text="Re-encrypt at most this many MiB per second (empty: as fast as the worker can).",
    )


class ScrubSerializer(StrictSerializer):
    key = serializers.CharField(
        required=False, help_text="The data key, to check every chunk's tag too; without it, sizes only."
    )
    rate_limit_mb_s = serializers.FloatField(required=False, allow_null=True, min_value=0.1, max_value=100000)


class DatasetJobView(StorageErrorsMixin, APIView):
    """Base: the dataset by mnemonic among those the user may see (404 otherwise)."""

    def dataset(self, mnemonic: str) -> Dataset:
        found = Dataset.objects.for_user(self.request.user, "view").filter(mnemonic=mnemonic).first()
        if found is None:
            raise NotFound("No such dataset.")
        return found

    def accepted(self, job) -> Response:
        data = JobSerializer(job, context={"request": self.request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["url"]})


class DatasetRekeyView(DatasetJobView):
    """Re-encrypt the dataset under a fresh key (after a key was lost or a grant revoked).

    Write holders only. Send the current key; a wrong one is refused (403) and nothing starts.
    The dataset stays readable with its old key until the job switches, atomically, to the new
    one, which is wrapped for every grant holder's active keys and every root key.
    """

    @extend_schema(request=RekeySerializer, responses={202: JobSerializer})
    def post(self, request, mnemonic: str):
        dataset = self.dataset(mnemonic)
        access.require_grant(request.user, dataset, "write")
        data = RekeySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = rekey.start_rekey(
            dataset,
            key=access.decode_key(data.validated_data["key"]),
            actor=request.user,
            rate_limit_mb_s=data.validated_data.get("rate_limit_mb_s"),
            request=request,
        )
        return self.accepted(job)


class DatasetScrubView(DatasetJobView):
    """Re-read the dataset's stored chunks and report damage: sizes, and with the key the tags.

    Grant holders; administrators without a grant may scrub sizes only.
    """

    @extend_schema(request=ScrubSerializer, responses={202: JobSerializer})
    def post(self, request, mnemonic: str):
        dataset = self.dataset(mnemonic)
        data = ScrubSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        text = data.validated_data.get("key")
        job = scrub.start_scrub(
            dataset,
            actor=request.user,
            key=access.decode_key(text) if text is not None else None,
            rate_limit_mb_s=data.validated_data.get("rate_limit_mb_s"),
            request=request,
        )
        return self.accepted(job)
