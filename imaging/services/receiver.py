"""The DICOM network receiver: a C-STORE SCP (pynetdicom) that also answers C-ECHO.

Scanners and PACS send to the portal's AE title on `PORTAL_DICOM_PORT`; the *called* AE title
says which project the images go to: one named in `PORTAL_DICOM_AE_ROUTES` ("CT_LAB:3,MRI:7"), or
`PROJECT<id>` (e.g. PROJECT12). Each association is one ingest run with its report, like an
upload: duplicates are skipped, conflicts kept and flagged, files that are not usable refused
with a failure status (and reported). Run it with `manage.py dicom_receiver`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import re
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from imaging.models import IngestRun, IngestState
from imaging.services.ingest import BATCH_FILES, IngestBatch, refresh_counts
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
    disk); an indexer process of the receiver stores them in batches, one transaction each, in
    the order they came, and closes the run when its association has ended (a process of its
    own: the receiving thread never waits for the database nor for its Python work). What a
    stopped receiver left in the spool is indexed when it starts again (`recover`)."""

    QUEUED = 500  # instances waiting to be indexed; the next C-STORE waits for room

    def __init__(self):
        self.runs: dict[int, IngestRun] = {}
        self.batches: dict[int, IngestBatch] = {}  # for reading and checking, per association
        self.sequence: dict[int, int] = {}
        self.lock = threading.Lock()
        self.spool = Path(settings.PORTAL_DATA_DIR) / "dicom-spool"
        self._start_indexer()

    def _start_indexer(self) -> None:
        from imaging.services.indexer import index_forever

        context = multiprocessing.get_context("spawn")
        self.queue = context.JoinableQueue(self.QUEUED)
        # The indexer is a fresh interpreter: it is told the database and data directory this
        # process uses (tests point both elsewhere than the settings module says).
        setup = {"database": connection.settings_dict["NAME"], "data_dir": str(settings.PORTAL_DATA_DIR)}
        self.indexer = context.Process(
            target=index_forever, args=(self.queue, setup, os.getpid()), name="dicom-indexer", daemon=True
        )
        self.indexer.start()

    def _indexer_alive(self) -> None:
        with self.lock:
            if not self.indexer.is_alive():
                # What its queue held stays in the spool; each run's end indexes what is left there.
                logger.error(
                    "DICOM receiver: the indexer process stopped (exit %s); starting another",
                    self.indexer.exitcode,
                )
                self._start_indexer()

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
        # Each answer is a small write the modality waits for: send it at once (no Nagle delay).
        connection_socket = getattr(event.assoc.dul.socket, "socket", None)
        if connection_socket is not None:
            connection_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

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
            self._indexer_alive()
            request = event.request
            data = (
                part10_header(
                    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID, event.context.transfer_syntax
                )
                + request.DataSet.getvalue()
            )
            with self.lock:
                self.sequence[key] += 1
                number = self.sequence[key]
            name = f"C-STORE {event.request.AffectedSOPInstanceUID}"
            path = self.spool / f"run-{run.pk}" / f"{number:08d}.dcm"
            with self.lock:
                batch = self.batches[key]
            refused = batch.check(name, path, data)  # read through and checked; described later
            if refused is not None:
                self.queue.put(("entry", run.pk, {**refused, "outcome": "rejected"}))
                return CANNOT_UNDERSTAND
            with open(path, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())  # answered "stored": on disk, whatever happens next
            self.queue.put(("store", run.pk, (name, path)))
            return SUCCESS
        except Exception:  # one bad instance must not end the association
            logger.exception("C-STORE failed")
            return OUT_OF_RESOURCES
        finally:
            close_old_connections()

    def handle_closed(self, event) -> None:
        key = id(event.assoc)
        with self.lock:
            run = self.runs.pop(key, None)
            self.batches.pop(key, None)
            self.sequence.pop(key, None)
        if run is not None:
            self.queue.put(("finish", run.pk, None))  # after the association's instances

    def drain(self) -> None:
        """Wait until everything received so far is indexed (and ended associations' runs closed)."""
        done = threading.Event()
        threading.Thread(target=lambda: (self.queue.join(), done.set()), daemon=True).start()
        while not done.wait(0.2):
            if not self.indexer.is_alive():
                raise RuntimeError(
                    "the DICOM indexer process stopped; what it had not stored is in the spool"
                )

    def stop(self) -> None:
        self.drain()
        self.queue.put(None)
        self.indexer.join(timeout=30)


# --- the indexer process ---------------------------------------------------------------------------

GATHER_SECONDS = 0.05  # how long the indexer waits for more instances before a transaction
RETRIES = 60  # attempts, a second apart, before a batch is left to the next start


def index_loop(work, setup: dict, parent: int) -> None:
    """The indexer process (`indexer.index_forever`): store what the receiver spooled, in
    batches, in arrival order."""
    connection.settings_dict["NAME"] = setup["database"]
    settings.PORTAL_DATA_DIR = setup["data_dir"]
    runs: dict[int, tuple[IngestRun, IngestBatch]] = {}
    while True:
        try:
            first = work.get(timeout=1)
        except queue.Empty:
            if os.getppid() != parent:  # the receiver is gone
                return
            continue
        if first is None:
            work.task_done()
            return
        waiting = [first]
        deadline = time.monotonic() + GATHER_SECONDS  # one transaction for what comes meanwhile
        while len(waiting) < BATCH_FILES and waiting[-1][0] == "store":
            try:
                waiting.append(work.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        taken = len(waiting)
        try:
            for attempt in range(RETRIES):
                close_old_connections()
                try:
                    _index(waiting, runs)
                    break
                except Exception:  # e.g. the database away for a moment: the spool keeps the files
                    logger.exception(
                        "DICOM receiver: indexing failed (attempt %d of %d)", attempt + 1, RETRIES
                    )
                    time.sleep(1)
                    # what was stored before the failure has left the spool: not again
                    waiting = [m for m in waiting if m[0] != "store" or m[2][1].exists()]
            else:
                logger.error("DICOM receiver: gave up; the spool is indexed when the receiver starts again")
        finally:
            close_old_connections()
            for _ in range(taken):
                work.task_done()


def _index(waiting: list, runs: dict) -> None:
    def run_of(pk: int) -> tuple[IngestRun, IngestBatch]:
        if pk not in runs:
            run = IngestRun.objects.get(pk=pk)
            runs[pk] = (run, IngestBatch(run, move=True))
        return runs[pk]

    group: list = []
    group_run = None
    for message in [*waiting, None]:
        if group and (message is None or message[0] != "store" or message[1] != group_run):
            run, batch = run_of(group_run)
            run.report.extend(batch.ingest(group))  # moved into place, or left to be removed
            for _, path in group:
                path.unlink(missing_ok=True)
            group = []
        if message is None:
            break
        kind, pk, payload = message
        if kind == "store":
            group_run = pk
            group.append(payload)
        elif kind == "entry":
            run_of(pk)[0].report.append(payload)
        elif kind == "finish":
            run, batch = run_of(pk)
            folder = Path(settings.PORTAL_DATA_DIR) / "dicom-spool" / f"run-{pk}"
            # spooled instances whose message was lost (an indexer that stopped): indexed now
            _ingest_spooled(run, batch, sorted(folder.glob("*.dcm")))
            finish_run(run)
            shutil.rmtree(folder, ignore_errors=True)
            del runs[pk]


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _uid(value) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def part10_header(sop_class, sop_instance, transfer_syntax) -> bytes:
    """Preamble, "DICM" and the file meta (PS3.10 7.1) for a data set received by C-STORE, as
    pydicom's `write_file_meta_info` would write them (made directly: this is per instance)."""
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    version = PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    body = b"".join(
        (
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", _uid(sop_class)),
            _element(0x00020003, b"UI", _uid(sop_instance)),
            _element(0x00020010, b"UI", _uid(transfer_syntax)),
            _element(0x00020012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)),
            _element(0x00020013, b"SH", version + b" " if len(version) % 2 else version),
        )
    )
    return b"\0" * 128 + b"DICM" + _element(0x00020000, b"UL", struct.pack("<L", len(body))) + body


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


def _ingest_spooled(run: IngestRun, batch: IngestBatch, files: list[Path]) -> None:
    for start in range(0, len(files), BATCH_FILES):
        chunk = files[start : start + BATCH_FILES]
        run.report.extend(batch.ingest([(f"C-STORE (spooled) {path.name}", path) for path in chunk]))
        for path in chunk:
            path.unlink(missing_ok=True)


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
        _ingest_spooled(run, IngestBatch(run, move=True), files)
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
            receiver.stop()

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
