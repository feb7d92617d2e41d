"""pynetdicom's storescu sends a study to the portal's receiver: C-ECHO answers, the called AE
title routes to the project, the instances land in the index with the right hierarchy; an unknown
AE title is refused."""

from __future__ import annotations

import socket
import subprocess
import sys

import pydicom
import pytest
from pydicom.data import get_testdata_file

from imaging.models import IngestRun, Instance, Study
from imaging.services.receiver import build_server
from metadata.services.projects import create_project
from portal.models import User

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def storescu(port: int, called: str, *paths: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pynetdicom",
            "storescu",
            "127.0.0.1",
            str(port),
            *paths,
            "-aec",
            called,
            "-aet",
            "MODALITY1",
            "-v",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_storescu_sends_a_study_to_the_receiver(settings, tmp_path):
    settings.PORTAL_DATA_DIR = tmp_path / "data"
    settings.IMAGING_AE_ROUTES = "CT_LAB:999999"
    owner = User.objects.create_user("olga")
    project = create_project(name="Scanner room", description="", owner=owner)
    settings.IMAGING_AE_ROUTES = f"CT_LAB:{project.pk}"
    port = free_port()
    server = build_server(port, "PORTAL", block=False)
    try:
        echo = subprocess.run(
            [sys.executable, "-m", "pynetdicom", "echoscu", "127.0.0.1", str(port), "-aec", "PORTAL"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert echo.returncode == 0, echo.stderr
        files = [get_testdata_file(name) for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")]
        sent = storescu(port, "CT_LAB", *files)
        assert sent.returncode == 0, sent.stderr
        by_convention = storescu(port, f"PROJECT{project.pk}", get_testdata_file("rtdose.dcm"))
        assert by_convention.returncode == 0, by_convention.stderr
        refused = storescu(port, "NOBODY", get_testdata_file("MR_small.dcm"))
        assert "0xC001" in refused.stdout + refused.stderr
    finally:
        server.shutdown()
    assert not list((tmp_path / "data" / "dicom-spool").glob("run-*/*"))  # all indexed, spool emptied
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm"):
        source = pydicom.dcmread(get_testdata_file(name))
        instance = Instance.objects.select_related("series__study").get(
            sop_instance_uid=source.SOPInstanceUID
        )
        assert instance.series.series_uid == source.SeriesInstanceUID
        assert instance.series.study.study_uid == source.StudyInstanceUID
        assert instance.series.study.project == project
        assert pydicom.dcmread(instance.full_path).SOPInstanceUID == source.SOPInstanceUID
    runs = list(IngestRun.objects.filter(source="network").order_by("pk"))
    assert [r.label for r in runs] == ["MODALITY1 → CT_LAB", f"MODALITY1 → PROJECT{project.pk}"]
    assert runs[0].accepted == 3 and runs[0].state == "done"
    assert Study.objects.filter(project=project).count() == 4


def test_what_a_stopped_receiver_spooled_is_indexed_when_it_starts(settings, tmp_path):
    """Instances are answered once they are in the spool; a receiver that stopped before indexing
    them leaves them there, and the next one indexes them into the same run before it listens."""
    from imaging.services.receiver import recover

    settings.PORTAL_DATA_DIR = tmp_path / "data"
    owner = User.objects.create_user("olga")
    project = create_project(name="Scanner room", description="", owner=owner)
    run = IngestRun.objects.create(project=project, source="network", label="CT1 → PORTAL", state="running")
    spool = tmp_path / "data" / "dicom-spool" / f"run-{run.pk}"
    spool.mkdir(parents=True)
    (spool / "00000001.dcm").write_bytes(open(get_testdata_file("CT_small.dcm"), "rb").read())
    (spool / "00000002.dcm").write_bytes(b"half a file")
    (tmp_path / "data" / "dicom-spool" / "run-999999").mkdir()  # no such run: left alone
    port = free_port()
    server = build_server(port, "PORTAL", block=False)  # recovers before it listens
    server.shutdown()
    run.refresh_from_db()
    assert run.state == "done" and (run.accepted, run.rejected) == (1, 1)
    assert "completed after the receiver restarted" in run.message
    assert not spool.exists() and (tmp_path / "data" / "dicom-spool" / "run-999999").exists()
    instance = Instance.objects.get(series__study__project=project)
    assert instance.full_path.is_file() and instance.ingest_id == run.pk
    assert recover() == 0


def test_an_indexer_that_stops_is_replaced_and_nothing_spooled_is_lost(settings, tmp_path):
    """The indexer process dies: the next C-STORE starts another; instances whose message died
    with it are still in the spool and are indexed when their association's run ends."""
    from imaging.services.receiver import _index

    settings.PORTAL_DATA_DIR = tmp_path / "data"
    owner = User.objects.create_user("olga")
    project = create_project(name="Scanner room", description="", owner=owner)
    port = free_port()
    server = build_server(port, "PORTAL", block=False)
    try:
        first = server.receiver.indexer
        first.kill()
        first.join(timeout=10)
        sent = storescu(port, f"PROJECT{project.pk}", get_testdata_file("CT_small.dcm"))
        assert sent.returncode == 0, sent.stderr
        assert server.receiver.indexer is not first and server.receiver.indexer.is_alive()
    finally:
        server.shutdown()
    assert Instance.objects.filter(series__study__project=project).count() == 1

    # A message lost with a stopped indexer: the file is in the spool when the run's end comes.
    run = IngestRun.objects.create(project=project, source="network", label="lost", state="running")
    spool = tmp_path / "data" / "dicom-spool" / f"run-{run.pk}"
    spool.mkdir(parents=True)
    (spool / "00000001.dcm").write_bytes(open(get_testdata_file("MR_small.dcm"), "rb").read())
    _index([("finish", run.pk, None)], {})
    run.refresh_from_db()
    assert run.state == "done" and run.accepted == 1 and not spool.exists()


@pytest.mark.parametrize("instance_uid", ["1.2.3.45", "1.2.3.4"])  # odd and even lengths: padded
def test_the_file_meta_written_per_instance_is_pydicoms(instance_uid):
    import io

    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    from imaging.services.receiver import part10_header

    meta = FileMetaDataset()
    meta.FileMetaInformationGroupLength = 0
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    expected = io.BytesIO()
    expected.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(expected, meta)
    header = part10_header("1.2.840.10008.5.1.4.1.1.2", instance_uid, "1.2.840.10008.1.2")
    assert header == expected.getvalue()
