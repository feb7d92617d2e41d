"""The DICOM network receiver: a C-STORE SCP (pynetdicom) that also answers C-ECHO.

Scanners and PACS send to the portal's AE title on `PORTAL_DICOM_PORT`; the *called* AE title
says which project the images go to: one named in `PORTAL_DICOM_AE_ROUTES` ("CT_LAB:3,MRI:7"), or
`PROJECT<id>` (e.g. PROJECT12). Each association is one ingest run with its report, like an
upload: duplicates are skipped, conflicts kept and flagged, files that are not usable refused
with a failure status (and reported). Run it with `manage.py dicom_receiver`.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import re
import shutil
import threading
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from pydicom.filewriter import write_file_meta_info

from imaging.models import IngestRun, IngestState
from imaging.services.ingest import BATCH_FILES, IngestBatch, Rejected, read_dataset, refresh_counts
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
    """The handlers of one running SCP; every association gets its own ingest run.

    A C-STORE is answered once the instance is read, checked (a file that is not usable gets a
    failure status) and written to the spool (`<data dir>/dicom-spool/run-<id>/`, flushed to
    disk); a thread of the receiver indexes the spool in batches, one transaction each, in the
    order the instances came, and closes the run when its association has ended. What a stopped
    receiver left in the spool is indexed when it starts again (`recover`)."""

    HELD = 1024 * 1024  # instances up to this size wait in memory, parsed; larger ones are read again
    QUEUED = 500  # instances waiting to be indexed; the next C-STORE waits for room

    def __init__(self):
        self.runs: dict[int, IngestRun] = {}
        self.batches: dict[int, IngestBatch] = {}  # what each association's run has looked up
        self.sequence: dict[int, int] = {}
        self.lock = threading.Lock()
        self.spool = Path(settings.PORTAL_DATA_DIR) / "dicom-spool"
        self.queue: queue.Queue = queue.Queue(self.QUEUED)
        self.indexer = threading.Thread(target=self._index_forever, name="dicom-indexer", daemon=True)
        self.indexer.start()

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
        (self.spool / f"run-{run.pk}").mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.runs[key] = run
            self.batches[key] = IngestBatch(run, move=True)
            self.sequence[key] = 0
        return run

    def handle_echo(self, event) -> int:
        return SUCCESS

    def handle_open(self, event) -> None:
        # pynetdicom polls its socket every millisecond between events; during an association a
        # shorter pause answers each C-STORE sooner (the modality waits for every answer).
        event.assoc.dul._run_loop_delay = 0.0001

    def handle_store(self, event) -> int:
        close_old_connections()
        try:
            run = self._run_of(event)
            if run is None:
                logger.warning(
                    "C-STORE refused: no project for called AE title of %s", event.assoc.requestor.address
                )
                return UNKNOWN_DESTINATION
            key = id(event.assoc)
            buffer = io.BytesIO()
            buffer.write(b"\0" * 128 + b"DICM")
            write_file_meta_info(buffer, event.file_meta)
            buffer.write(event.request.DataSet.getvalue())
            data = buffer.getvalue()
            with self.lock:
                self.sequence[key] += 1
                number = self.sequence[key]
            name = f"C-STORE {event.request.AffectedSOPInstanceUID}"
            path = self.spool / f"run-{run.pk}" / f"{number:08d}.dcm"
            try:
                dataset = read_dataset(path, data)
            except Rejected as exc:
                with self.lock:
                    run.report.append({"file": name, "outcome": "rejected", "reason": str(exc)})
                return CANNOT_UNDERSTAND
            with open(path, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())  # answered "stored": on disk, whatever happens next
            held = (data, dataset) if len(data) <= self.HELD else ()
            self.queue.put((key, (name, path, *held)))
            return SUCCESS
        except Exception:  # one bad instance must not end the association
            logger.exception("C-STORE failed")
            return OUT_OF_RESOURCES
        finally:
            close_old_connections()

    def handle_closed(self, event) -> None:
        with self.lock:
            known = id(event.assoc) in self.runs
        if known:
            self.queue.put((id(event.assoc), None))  # after the association's instances

    # --- the indexer thread ---------------------------------------------------------------------

    def _index_forever(self) -> None:
        while True:
            waiting = [self.queue.get()]
            while len(waiting) < BATCH_FILES:
                try:
                    waiting.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            close_old_connections()
            try:
                self._index(waiting)
            except Exception:  # the spool keeps the files: indexed when the receiver starts again
                logger.exception("DICOM receiver: indexing failed; the instances stay in %s", self.spool)
            finally:
                close_old_connections()
                for _ in waiting:
                    self.queue.task_done()

    def drain(self) -> None:
        """Wait until everything received so far is indexed (and ended associations' runs closed)."""
        self.queue.join()

    def _index(self, waiting: list) -> None:
        group: list = []
        group_key = None
        for key, item in waiting + [(None, None)]:
            if group and (key != group_key or item is None):
                self._index_group(group_key, group)
                group = []
            if key is None:
                break
            if item is None:
                self._finish(key)
            else:
                group_key = key
                group.append(item)

    def _index_group(self, key: int, items: list) -> None:
        with self.lock:
            run, batch = self.runs[key], self.batches[key]
        entries = batch.ingest(items)
        for item in items:
            item[1].unlink(missing_ok=True)
        with self.lock:
            run.report.extend(entries)

    def _finish(self, key: int) -> None:
        with self.lock:
            run = self.runs.pop(key, None)
            self.batches.pop(key, None)
            self.sequence.pop(key, None)
        if run is not None:
            finish_run(run)
            shutil.rmtree(self.spool / f"run-{run.pk}", ignore_errors=True)


def finish_run(run: IngestRun, note: str = "") -> None:
    outcomes = [entry["outcome"] for entry in run.report]
    run.accepted, run.duplicates = outcomes.count("accepted"), outcomes.count("duplicate")
    run.conflicts, run.rejected = outcomes.count("conflict"), outcomes.count("rejected")
    run.state, run.finished_at = IngestState.DONE, timezone.now()
    run.message = (
        f"{run.accepted} accepted, {run.duplicates} duplicate(s) skipped, "
        f"{run.conflicts} conflict(s) kept, {run.rejected} rejected (DICOM network{note})"
    )
    run.save()
    refresh_counts(run.project_id, {e["study"] for e in run.report if e.get("study")})


def recover() -> int:
    """Index what a receiver that stopped left in the spool, into the runs it belongs to; returns
    how many instances were taken."""
    spool = Path(settings.PORTAL_DATA_DIR) / "dicom-spool"
    taken = 0
    for folder in sorted(spool.glob("run-*")) if spool.is_dir() else []:
        run = IngestRun.objects.filter(pk=int(folder.name[4:]) if folder.name[4:].isdigit() else 0).first()
        if run is None:
            logger.warning("DICOM receiver: %s belongs to no ingest run; left as it is", folder)
            continue
        files = sorted(folder.glob("*.dcm"))
        batch = IngestBatch(run, move=True)
        for start in range(0, len(files), BATCH_FILES):
            chunk = files[start : start + BATCH_FILES]
            run.report.extend(batch.ingest([(f"C-STORE (spooled) {path.name}", path) for path in chunk]))
            for path in chunk:
                path.unlink(missing_ok=True)
        taken += len(files)
        finish_run(run, note=", completed after the receiver restarted")
        shutil.rmtree(folder, ignore_errors=True)
    return taken


def build_server(port: int | None = None, ae_title: str | None = None, *, block: bool = True):
    """Start the SCP on `port` (0: a free one) answering as `ae_title`; with `block=False` it runs
    in threads and the server object is returned (`.shutdown()` stops it)."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    taken = recover()
    if taken:
        logger.warning("DICOM receiver: indexed %d instance(s) left in the spool when it stopped", taken)
    receiver = Receiver()
    ae = AE(ae_title=ae_title or settings.IMAGING_AE_TITLE)
    ae.require_called_aet = False  # the called title routes to a project; checked per store
    ae.maximum_pdu_size = 0
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    handlers = [
        (evt.EVT_CONN_OPEN, receiver.handle_open),
        (evt.EVT_C_ECHO, receiver.handle_echo),
        (evt.EVT_C_STORE, receiver.handle_store),
        (evt.EVT_RELEASED, receiver.handle_closed),
        (evt.EVT_ABORTED, receiver.handle_closed),
        (evt.EVT_CONN_CLOSE, receiver.handle_closed),
    ]
    address = (settings.IMAGING_DICOM_HOST, settings.IMAGING_DICOM_PORT if port is None else port)
    server = ae.start_server(address, block=block, evt_handlers=handlers)
    if server is not None:  # in threads: stopping it also finishes what it received
        stop = server.shutdown

        def shutdown() -> None:
            stop()
            receiver.drain()

        server.shutdown, server.receiver = shutdown, receiver
    return server


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
