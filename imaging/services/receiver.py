"""The DICOM network receiver: a C-STORE SCP (pynetdicom) that also answers C-ECHO.

Scanners and PACS send to the portal's AE title on `PORTAL_DICOM_PORT`; the *called* AE title
says which project the images go to: one named in `PORTAL_DICOM_AE_ROUTES` ("CT_LAB:3,MRI:7"), or
`PROJECT<id>` (e.g. PROJECT12). Each association is one ingest run with its report, like an
upload: duplicates are skipped, conflicts kept and flagged, files that are not usable refused
with a failure status (and reported). Run it with `manage.py dicom_receiver`.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from imaging.models import IngestRun, IngestState
from imaging.services.ingest import IngestBatch, refresh_counts
from metadata.models import Project

logger = logging.getLogger(__name__)
SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
UNKNOWN_DESTINATION = 0xC001  # a status of the C000–CFFF "cannot understand" range


def routes() -> dict[str, int]:
    """Called AE title → project id, from `PORTAL_DICOM_AE_ROUTES`."""
    found = {}
    for item in str(settings.IMAGING_AE_ROUTES or "").split(","):
        title, _, project = item.partition(":")
        if title.strip() and project.strip().isdigit():
            found[title.strip().upper()] = int(project)
    return found


def project_for(called_ae: str) -> Project | None:
    title = (called_ae or "").strip().upper()
    project_id = routes().get(title)
    if project_id is None:
        match = re.fullmatch(r"PROJECT(\d{1,12})", title)
        project_id = int(match.group(1)) if match else None
    return Project.objects.filter(pk=project_id).first() if project_id else None


class Receiver:
    """The handlers of one running SCP; every association gets its own ingest run."""

    def __init__(self):
        self.runs: dict[int, IngestRun] = {}
        self.batches: dict[int, IngestBatch] = {}  # what each association's run has looked up
        self.lock = threading.Lock()
        self.folder = Path(tempfile.mkdtemp(prefix="dicom-receiver-"))

    def _run_of(self, event) -> IngestRun | None:
        key = id(event.assoc)
        with self.lock:
            if key in self.runs:
                return self.runs[key]
        called = event.assoc.requestor.primitive.called_ae_title if event.assoc.requestor.primitive else ""
        called = called.decode() if isinstance(called, bytes) else str(called or "")
        project = project_for(called)
        if project is None:
            return None
        calling = str(event.assoc.requestor.ae_title or "").strip()
        run = IngestRun.objects.create(
            project=project,
            source="network",
            label=f"{calling or 'unknown'} → {called.strip()}",
            state=IngestState.RUNNING,
        )
        with self.lock:
            self.runs[key] = run
            self.batches[key] = IngestBatch(run)
        return run

    def handle_echo(self, event) -> int:
        return SUCCESS

    def handle_store(self, event) -> int:
        close_old_connections()
        try:
            run = self._run_of(event)
            if run is None:
                logger.warning(
                    "C-STORE refused: no project for called AE title of %s", event.assoc.requestor.address
                )
                return UNKNOWN_DESTINATION
            path = self.folder / f"{id(event.assoc)}-{event.request.MessageID}.dcm"
            with open(path, "wb") as handle:
                from pydicom.filewriter import write_file_meta_info

                handle.write(b"\0" * 128 + b"DICM")
                write_file_meta_info(handle, event.file_meta)
                handle.write(event.request.DataSet.getvalue())
            try:
                name = f"C-STORE {event.request.AffectedSOPInstanceUID}"
                entry = self.batches[id(event.assoc)].ingest([(name, path)])[0]
            finally:
                path.unlink(missing_ok=True)
            with self.lock:
                run.report.append(entry)
            return SUCCESS if entry["outcome"] in ("accepted", "duplicate", "conflict") else CANNOT_UNDERSTAND
        except Exception:  # one bad instance must not end the association
            logger.exception("C-STORE failed")
            return OUT_OF_RESOURCES
        finally:
            close_old_connections()

    def handle_closed(self, event) -> None:
        with self.lock:
            run = self.runs.pop(id(event.assoc), None)
            self.batches.pop(id(event.assoc), None)
        if run is None:
            return
        close_old_connections()
        try:
            outcomes = [entry["outcome"] for entry in run.report]
            run.accepted, run.duplicates = outcomes.count("accepted"), outcomes.count("duplicate")
            run.conflicts, run.rejected = outcomes.count("conflict"), outcomes.count("rejected")
            run.state, run.finished_at = IngestState.DONE, timezone.now()
            run.message = (
                f"{run.accepted} accepted, {run.duplicates} duplicate(s) skipped, "
                f"{run.conflicts} conflict(s) kept, {run.rejected} rejected (DICOM network)"
            )
            run.save()
            refresh_counts(run.project_id, {e["study"] for e in run.report if e.get("study")})
        finally:
            close_old_connections()


def build_server(port: int | None = None, ae_title: str | None = None, *, block: bool = True):
    """Start the SCP on `port` (0: a free one) answering as `ae_title`; with `block=False` it runs
    in threads and the server object is returned (`.shutdown()` stops it)."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    receiver = Receiver()
    ae = AE(ae_title=ae_title or settings.IMAGING_AE_TITLE)
    ae.require_called_aet = False  # the called title routes to a project; checked per store
    ae.maximum_pdu_size = 0
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    handlers = [
        (evt.EVT_C_ECHO, receiver.handle_echo),
        (evt.EVT_C_STORE, receiver.handle_store),
        (evt.EVT_RELEASED, receiver.handle_closed),
        (evt.EVT_ABORTED, receiver.handle_closed),
        (evt.EVT_CONN_CLOSE, receiver.handle_closed),
    ]
    address = (settings.IMAGING_DICOM_HOST, settings.IMAGING_DICOM_PORT if port is None else port)
    return ae.start_server(address, block=block, evt_handlers=handlers)


ALL_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.840.10008.1.2.2",  # explicit VR big endian (retired, still sent)
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE lossless
]
