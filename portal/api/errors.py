"""One error format for the whole API: `{"detail": ..., "code": ..., "errors": {field: [...]}}`."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig, ValidationError
from django.db import DataError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)

DATA_ERROR = (
    "A value in the request cannot be stored or looked up: it is out of range or holds a "
    "character the database does not take (NUL)."
)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class Gone(exceptions.APIException):
    status_code = status.HTTP_410_GONE
    default_detail = "This resource is no longer available."
    default_code = "gone"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


def _flatten(detail) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
                out[key] = [str(v) for v in value]
            elif isinstance(value, dict):
                for sub, msgs in _flatten(value).items():
                    out[f"{key}.{sub}"] = msgs
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    for sub, msgs in _flatten(item if isinstance(item, dict) else {"": item}).items():
                        out[f"{key}[{i}]" + (f".{sub}" if sub else "")] = msgs
            else:
                out[key] = [str(value)]
        return out
    if isinstance(detail, (list, tuple)):
        return {"non_field_errors": [str(v) for v in detail]}
    return {"non_field_errors": [str(detail)]}


def exception_handler(exc, context):
    """Turn every client error into the portal's error format; leave real bugs to Django."""
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, ValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DataError):
        # The database refused a value the request brought that no check caught before (each
        # such case found gets a check of its own): a client error, logged for the developers
        # without the database's message, which may quote the value (a key, say).
        logger.warning(
            "The database refused a value (SQLSTATE %s) in a request to %s",
            getattr(exc.__cause__, "sqlstate", None),
            type(context.get("view")).__name__,
        )
        exc = exceptions.ValidationError({"non_field_errors": [DATA_ERROR]})
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        non_field = errors.get("non_field_errors")
        data = {
            "detail": non_field[0] if non_field and len(errors) == 1
            else "The request has invalid fields; see `errors`.",
            "code": "invalid",
            "errors": errors,
        }
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        data = {"detail": str(detail), "code": codes if isinstance(codes, str) else "error"}
    return Response(data, status=response.status_code, headers=dict(response.headers))
