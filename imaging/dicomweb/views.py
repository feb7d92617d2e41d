"""DICOMweb (PS3.18): QIDO-RS search, WADO-RS retrieve and metadata, STOW-RS store.

Two bases: `/dicomweb` serves every study the user may see (for viewers such as OHIF), and
`/dicomweb/projects/<id>` one project's studies – STOW-RS stores there (writers). Authentication
by session or bearer token (`read` scope to search and retrieve, `write` to store), through the
REST framework like the rest of the API; a study the user may not see does not exist here.
"""

from __future__ import annotations

import io
import json
import secrets
import tempfile
from pathlib import Path

import numpy as np
from django.http import HttpResponse, StreamingHttpResponse
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from imaging.dicomweb import query
from imaging.models import IngestRun, IngestState, Instance, Series, Study
from imaging.services.ingest import BATCH_BYTES, BATCH_FILES, IngestBatch, refresh_counts
from metadata.models import Project
from metadata.querysets import has_project_role

DICOM_JSON = "application/dicom+json"
PART_IN_MEMORY = 16 * 1024 * 1024  # STOW parts up to this size are not written to temporary files
MAX_STOW_BYTES = 4 * 2**30  # streamed to files part by part
READ_BLOCK = 1024 * 1024


class AnyAccept(BaseContentNegotiation):
    """DICOMweb answers are made by the views (multipart, DICOM JSON); errors are JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0]


class Untouched(BaseParser):
    """Bodies (STOW's multipart/related) are read by the view itself, as a stream; this only
    keeps the framework (token authentication looks at form fields) from refusing them."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


class DicomWebView(APIView):
    schema = None  # a standard of its own (PS3.18), not part of the portal's OpenAPI description
    content_negotiation_class = AnyAccept
    renderer_classes = [JSONRenderer]
    parser_classes = [Untouched]

    def base(self, request, project: int | None) -> str:
        root = public_root(request) + "/dicomweb"
        return f"{root}/projects/{project}" if project else root

    def studies(self, request, project: int | None):
        found = Study.objects.for_user(request.user, "view").select_related("patient")
        if project is not None:
            found = found.filter(project_id=project)
        return found

    def study(self, request, project, study_uid: str) -> Study:
        study = self.studies(request, project).filter(study_uid=study_uid).order_by("pk").first()
        if study is None:
            raise exceptions.NotFound("No such study.")
        return study

    def instances(self, request, project, study_uid, series_uid=None, sop_uid=None):
        found = Instance.objects.filter(
            series__study__in=self.studies(request, project), series__study__study_uid=study_uid
        )
        if series_uid:
            found = found.filter(series__series_uid=series_uid)
        if sop_uid:
            found = found.filter(sop_instance_uid=sop_uid)
        return found.select_related("series__study").order_by("series__number", "series_id", "number", "pk")

    def handle_exception(self, exc):
        if isinstance(exc, query.QueryError):
            exc = exceptions.ValidationError({"detail": str(exc)})
        return super().handle_exception(exc)


def public_root(request) -> str:
    """Where clients reach the portal, for the absolute URLs DICOMweb answers carry: from the
    request; a Host header without its port (some clients send one) gets the server's port when
    no proxy stands between (a proxy says so with X-Forwarded-*)."""
    meta = request.META
    host = request.get_host()
    if (
        ":" not in host.rsplit("]", 1)[-1]
        and "HTTP_X_FORWARDED_PROTO" not in meta
        and "HTTP_X_FORWARDED_FOR" not in meta
        and str(meta.get("SERVER_PORT", "")) not in ("", "80", "443")
    ):
        host = f"{host}:{meta['SERVER_PORT']}"
    return f"{request.scheme}://{host}"


def dicom_json(data, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(data), status=status, content_type=DICOM_JSON)


# --- QIDO-RS ---------------------------------------------------------------------------------------


class SearchStudies(DicomWebView):
    def get(self, request, project=None):
        params = request.query_params
        fuzzy = params.get("fuzzymatching", "").lower() == "true"
        found = query.filter_level(self.studies(request, project), "study", params, fuzzy)
        found = query.paginate(found.order_by("-study_date", "pk"), params)
        includes, everything = query.includes_of(params)
        base = self.base(request, project)
        return dicom_json([query.study_json(s, base, _study_extra(s, includes, everything)) for s in found])

    def post(self, request, project=None):
        return stow(self, request, project, None)


def _study_extra(study: Study, includes: set[str], everything: bool) -> dict:
    """Further study-level attributes from a representative instance, when `includefield` asks."""
    if not includes and not everything:
        return {}
    first = Instance.objects.filter(series__study=study).order_by("pk").first()
    if first is None:
        return {}
    study_tags = {
        "00080020",
        "00080030",
        "00080050",
        "00080090",
        "00081030",
        "00100010",
        "00100020",
        "00100030",
        "00100040",
        "00101010",
        "00101020",
        "00101030",
        "00200010",
        "00080005",
    }
    wanted = study_tags if everything else includes
    return {tag: value for tag, value in first.attributes.items() if tag in wanted}


class SearchSeries(DicomWebView):
    def get(self, request, project=None, study=None):
        params = request.query_params
        fuzzy = params.get("fuzzymatching", "").lower() == "true"
        found = Series.objects.filter(study__in=self.studies(request, project)).select_related(
            "study__patient"
        )
        if study:
            self.study(request, project, study)
            found = found.filter(study__study_uid=study)
        found = query.filter_level(found, "series", params, fuzzy)
        found = query.paginate(found.order_by("study_id", "number", "pk"), params)
        base = self.base(request, project)
        return dicom_json([query.series_json(s, base) for s in found])


class SearchInstances(DicomWebView):
    def get(self, request, project=None, study=None, series=None):
        params = request.query_params
        fuzzy = params.get("fuzzymatching", "").lower() == "true"
        found = Instance.objects.filter(series__study__in=self.studies(request, project)).select_related(
            "series__study"
        )
        if study:
            self.study(request, project, study)
            found = found.filter(series__study__study_uid=study)
        if series:
            found = found.filter(series__series_uid=series)
        found = query.filter_level(found, "instance", params, fuzzy)
        found = query.paginate(found.order_by("series_id", "number", "pk"), params)
        includes, everything = query.includes_of(params)
        base = self.base(request, project)
        return dicom_json([query.instance_json(i, base, includes, everything) for i in found])


# --- WADO-RS -----------------------------------------------------------------------------------------


def multipart(request, paths: list[Path], content_type: str = "application/dicom"):
    """The files as multipart/related, streamed."""
    boundary = secrets.token_hex(16)

    def parts():
        for path in paths:
            yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
            with open(path, "rb") as handle:
                while block := handle.read(READ_BLOCK):
                    yield block
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    from storage.api.views import streamed

    response = StreamingHttpResponse(streamed(request, parts()))
    response["Content-Type"] = f'multipart/related; type="{content_type}"; boundary={boundary}'
    return response


class Retrieve(DicomWebView):
    """The instances of a study, a series or one instance, as DICOM files."""

    def get(self, request, project=None, study=None, series=None, instance=None):
        found = list(self.instances(request, project, study, series, instance))
        if not found:
            raise exceptions.NotFound("No such study, series or instance.")
        return multipart(request, [i.full_path for i in found])


class Metadata(DicomWebView):
    """Every instance's attributes (DICOM JSON) of a study, series or instance; bulk values as URLs."""

    def get(self, request, project=None, study=None, series=None, instance=None):
        documents = query.metadata_documents(
            self.instances(request, project, study, series, instance), self.base(request, project)
        )
        if not documents:
            raise exceptions.NotFound("No such study, series or instance.")
        return HttpResponse("[" + ",".join(documents) + "]", content_type=DICOM_JSON)


class BulkData(DicomWebView):
    """One bulk value of an instance (octet-stream)."""

    def get(self, request, project=None, study=None, series=None, instance=None, tag=None):
        import pydicom

        found = self.instances(request, project, study, series, instance).first()
        if found is None:
            raise exceptions.NotFound("No such instance.")
        dataset = pydicom.dcmread(found.full_path)
        element = dataset.get(int(tag, 16))
        if element is None or not isinstance(element.value, bytes | bytearray):
            raise exceptions.NotFound("No such bulk data.")
        boundary = secrets.token_hex(16)
        body = (
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            + bytes(element.value)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        response = HttpResponse(body)
        response["Content-Type"] = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
        return response


# --- STOW-RS -----------------------------------------------------------------------------------------


class _Part:
    """One part of a multipart body: in memory while small, else spilled to a file."""

    def __init__(self, path: Path):
        self.path, self.buffer, self.handle = path, io.BytesIO(), None

    def write(self, data: bytes) -> None:
        if self.handle is None and self.buffer.tell() + len(data) > PART_IN_MEMORY:
            self.handle = open(self.path, "wb")  # closed by close()
            self.handle.write(self.buffer.getvalue())
            self.buffer = None
        (self.handle or self.buffer).write(data)

    def close(self) -> bytes | None:
        """The part's bytes, or None when they are in the file."""
        if self.handle is not None:
            self.handle.close()
            return None
        return self.buffer.getvalue()


def split_multipart(stream, boundary: bytes, folder: Path, limit: int):
    """Read the parts of a multipart body from `stream`, block by block; a part larger than
    PART_IN_MEMORY goes to a file in `folder` as it arrives. Yields (headers, path, data): `data`
    holds a small part's bytes (then nothing is at `path`), None for one written to `path`."""
    delimiter = b"\r\n--" + boundary
    buffer = b"\r\n"  # so the first delimiter looks like the others
    total, number = 0, 0
    handle, headers, path = None, None, None

    def more() -> bytes:
        nonlocal total
        block = stream.read(READ_BLOCK)
        total += len(block)
        if total > limit:
            raise exceptions.ValidationError({"detail": f"A STOW request is at most {limit:,} bytes."})
        return block

    eof = False
    while True:
        position = buffer.find(delimiter)
        if position < 0:
            if eof:
                break
            keep = len(delimiter) + 4
            if handle is not None and len(buffer) > keep:
                handle.write(buffer[:-keep])
                buffer = buffer[-keep:]
            block = more()
            eof = not block
            buffer += block
            continue
        if handle is not None:
            handle.write(buffer[:position])
            yield headers, path, handle.close()
            handle = None
        buffer = buffer[position + len(delimiter) :]
        while len(buffer) < 2 and not eof:
            block = more()
            eof = not block
            buffer += block
        if buffer.startswith(b"--"):
            return
        while b"\r\n\r\n" not in buffer and not eof:
            block = more()
            eof = not block
            buffer += block
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip():
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        path = folder / f"{number:06d}.part"
        number += 1
        handle = _Part(path)  # closed when the part ends
    if handle is not None:
        handle.close()


def _study_of(path: Path, data: bytes | None) -> str | None:
    """The Study Instance UID a part names (None when it cannot be read: ingest says why)."""
    import pydicom

    source = io.BytesIO(data) if data is not None else path
    try:
        return (
            str(pydicom.dcmread(source, stop_before_pixels=True, force=True).get("StudyInstanceUID", ""))
            or None
        )
    except Exception:  # noqa: BLE001 - unreadable files are reported by the ingest
        return None


def _flushing_on_error(parts, pending: list, flush):
    """The parts; when the body breaks off (cut, over the limit), the complete parts read so far
    are stored before the error goes on."""
    try:
        yield from parts
    except Exception:
        if pending:
            flush()
        raise


def stow(view: DicomWebView, request, project_id, study_uid):
    if project_id is None:
        raise exceptions.MethodNotAllowed(
            "POST", "Store into a project: POST /dicomweb/projects/<id>/studies."
        )
    project = Project.objects.filter(pk=project_id).first()
    if project is None or not has_project_role(request.user, project, "reader"):
        raise exceptions.NotFound("No such project.")
    if not has_project_role(request.user, project, "writer"):
        raise exceptions.PermissionDenied("Storing needs the writer role in the project.")
    content_type = request.META.get("CONTENT_TYPE", "")
    boundary = None
    for part in content_type.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"').encode("latin-1")
    if not content_type.lower().startswith("multipart/related") or not boundary:
        raise exceptions.UnsupportedMediaType(
            content_type or "none", 'Send multipart/related; type="application/dicom" with a boundary.'
        )
    run = IngestRun.objects.create(
        project=project, source="stow", label="STOW-RS", created_by=request.user, state=IngestState.RUNNING
    )
    referenced, failed, report = [], [], []
    base = view.base(request, project_id)
    batch = IngestBatch(run)
    pending: list[tuple[str, Path, bytes | None]] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending_bytes
        entries = batch.ingest([(n, p, d) if d is not None else (n, p) for n, p, d in pending])
        for _, path, _ in pending:
            path.unlink(missing_ok=True)
        pending.clear()
        pending_bytes = 0
        respond(entries)

    def respond(entries: list[dict]) -> None:
        fields = ("sop_instance_uid", "sop_class_uid", "series__series_uid", "series__study__study_uid")
        instances = (
            Instance.objects.filter(pk__in=[e["instance"] for e in entries if e.get("instance")])
            .select_related("series__study")
            .only(*fields)
        )
        by_pk = {instance.pk: instance for instance in instances}
        by_uid = {}
        duplicates = [e["sop_instance_uid"] for e in entries if e["outcome"] == "duplicate"]
        if duplicates:
            for instance in (
                Instance.objects.filter(sop_instance_uid__in=duplicates, series__study__project=project)
                .select_related("series__study")
                .only(*fields)
                .order_by("pk")
            ):
                by_uid[instance.sop_instance_uid] = instance
        for entry in entries:
            report.append(entry)
            instance = by_pk.get(entry.get("instance")) or by_uid.get(entry.get("sop_instance_uid"))
            if entry["outcome"] in ("accepted", "conflict", "duplicate") and instance is not None:
                referenced.append(
                    {
                        "00081150": {"vr": "UI", "Value": [instance.sop_class_uid]},
                        "00081155": {"vr": "UI", "Value": [instance.sop_instance_uid]},
                        "00081190": {"vr": "UR", "Value": [query.instance_url(instance, base)]},
                    }
                )
            else:
                item = {"00081197": {"vr": "US", "Value": [0xC000]}}  # cannot understand
                if entry.get("sop_instance_uid"):
                    item["00081155"] = {"vr": "UI", "Value": [entry["sop_instance_uid"]]}
                failed.append(item)

    try:
        with tempfile.TemporaryDirectory() as folder:
            parts = split_multipart(request._request, boundary, Path(folder), MAX_STOW_BYTES)
            for number, (headers, path, data) in enumerate(_flushing_on_error(parts, pending, flush)):
                kind = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
                refused = None
                if kind not in ("application/dicom", "application/octet-stream"):
                    refused = f"a part of type {kind}, not application/dicom"
                elif study_uid and _study_of(path, data) not in (None, study_uid):
                    refused = "belongs to another study than the URL names"
                if refused:
                    path.unlink(missing_ok=True)
                    if pending:  # keep the report in the order of the parts
                        flush()
                    respond([{"file": f"part {number + 1}", "outcome": "rejected", "reason": refused}])
                    continue
                pending.append((f"part {number + 1}", path, data))
                pending_bytes += len(data) if data is not None else path.stat().st_size
                if len(pending) >= BATCH_FILES or pending_bytes >= BATCH_BYTES:
                    flush()
            if pending:
                flush()
    except Exception as exc:
        # A body cut off or over the limit: what was complete before is stored and reported.
        IngestRun.objects.filter(pk=run.pk).update(
            report=report,
            accepted=sum(e["outcome"] == "accepted" for e in report),
            state=IngestState.FAILED,
            message=f"STOW-RS request ended early: {getattr(exc, 'detail', exc)}"[:500],
        )
        refresh_counts(project.pk, {e["study"] for e in report if e.get("study")})
        raise
    outcomes = [e["outcome"] for e in report]
    IngestRun.objects.filter(pk=run.pk).update(
        report=report,
        accepted=outcomes.count("accepted"),
        duplicates=outcomes.count("duplicate"),
        conflicts=outcomes.count("conflict"),
        rejected=outcomes.count("rejected"),
        state=IngestState.DONE,
        message=f"{outcomes.count('accepted')} accepted, {outcomes.count('rejected')} rejected (STOW-RS)",
    )
    refresh_counts(project.pk, {e["study"] for e in report if e.get("study")})
    answer = {
        "00081190": {"vr": "UR", "Value": [f"{base}/studies/{study_uid}" if study_uid else f"{base}/studies"]}
    }
    if referenced:
        answer["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        answer["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else (202 if referenced else 409)
    return dicom_json(answer, status)


class StudyResource(DicomWebView):
    """GET: the study's instances (WADO-RS); POST: store into it (STOW-RS, project base only)."""

    def get(self, request, project=None, study=None):
        return Retrieve.get(self, request, project, study)

    def post(self, request, project=None, study=None):
        return stow(self, request, project, study)


# --- frames, rendered images, thumbnails -----------------------------------------------------------


def _accepts(request, *kinds: str) -> str | None:
    """The first of `kinds` the Accept header allows (any when it names none of ours)."""
    accept = request.headers.get("Accept", "") or "*/*"
    offered = []
    for part in accept.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        if media.lower() == "multipart/related":  # the parts' type is a parameter
            types = [p.split("=", 1)[1].strip('"').lower() for p in params if p.lower().startswith("type=")]
            offered += types or ["application/octet-stream"]
        else:
            offered.append(media.lower())
    for kind in kinds:
        if kind in offered or "*/*" in offered or kind.split("/")[0] + "/*" in offered:
            return kind
    return None


class Frames(DicomWebView):
    """Frames of an instance (`frames/1,3`): as stored when the client takes that media type,
    else decoded to raw pixels (application/octet-stream)."""

    def get(self, request, project=None, study=None, series=None, instance=None, frames=None):
        from imaging.services import render

        found = self.instances(request, project, study, series, instance).first()
        if found is None:
            raise exceptions.NotFound("No such instance.")
        try:
            numbers = [int(n) for n in frames.split(",")]
        except ValueError:
            raise exceptions.ValidationError({"detail": "Frames are numbers, e.g. 1 or 1,2,3."}) from None
        dataset = render.read(found.full_path)
        kind = "application/octet-stream"
        try:
            data, kind = render.raw_frames(dataset, numbers)
            if kind != "application/octet-stream" and _accepts(request, kind) is None:
                decoded = [render.decoded_frame(dataset, n) for n in numbers]
                data, kind = (
                    [np.ascontiguousarray(frame).tobytes() for frame in decoded],
                    "application/octet-stream",
                )
        except render.PixelError as exc:
            if "cannot be decoded" in str(exc):
                return HttpResponse(
                    json.dumps(
                        {"detail": f"{exc}; ask for the frames as stored ({kind})", "code": "cannot_decode"}
                    ),
                    status=406,
                    content_type="application/json",
                )
            raise exceptions.NotFound(str(exc)) from None
        boundary = secrets.token_hex(16)
        body = b"".join(
            f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode() + part + b"\r\n" for part in data
        )
        response = HttpResponse(body + f"--{boundary}--\r\n".encode())
        response["Content-Type"] = f'multipart/related; type="{kind}"; boundary={boundary}'
        return response


class Rendered(DicomWebView):
    """An instance (or one of its frames) as JPEG or PNG, with `window=center,width[,function]`;
    `thumbnail` gives a small one, for instances, series (their middle instance) and studies."""

    thumbnail = False

    def get(self, request, project=None, study=None, series=None, instance=None, frame=None):
        from imaging.services import render

        found = list(self.instances(request, project, study, series, instance))
        if not found:
            raise exceptions.NotFound("No such study, series or instance.")
        picked = found[len(found) // 2] if instance is None else found[0]
        kind = _accepts(request, "image/jpeg", "image/png")
        if kind is None:
            raise exceptions.NotAcceptable("Rendered images are image/jpeg or image/png.")
        try:
            window = render.parse_window(request.query_params.get("window"))
            size = 128 if self.thumbnail else None
            if request.query_params.get("viewport"):
                size = max(
                    16, min(4096, max(int(v) for v in request.query_params["viewport"].split(",")[:2]))
                )
            dataset = render.read(picked.full_path)
            image = render.render(dataset, int(frame or 1), window, size)
        except (render.PixelError, ValueError) as exc:
            if isinstance(exc, render.PixelError) and "cannot be decoded" in str(exc):
                return HttpResponse(
                    json.dumps({"detail": str(exc), "code": "cannot_decode"}),
                    status=406,
                    content_type="application/json",
                )
            raise exceptions.ValidationError({"detail": str(exc)}) from None
        response = HttpResponse(render.encode(image, kind), content_type=kind)
        response["Cache-Control"] = "private, max-age=3600"
        return response


class Thumbnail(Rendered):
    thumbnail = True
