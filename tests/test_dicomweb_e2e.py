"""The real client `dicomweb-client` against the running portal: STOW-RS stores, QIDO-RS finds,
WADO-RS retrieves files and metadata, all within what the token's user may see."""

from __future__ import annotations

import datetime as dt

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from django.utils import timezone
from pydicom.data import get_testdata_file

from imaging.models import Instance, Study
from metadata.services.projects import create_project, set_member
from portal.models import User
from portal.services.tokens import create_api_token

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FILES = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "JPEG-lossy.dcm"]


def token_for(user, scopes=("read", "write")) -> str:
    _, secret = create_api_token(
        user, name="dicomweb", scopes=list(scopes), expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    return secret


def client_for(base: str, token: str) -> DICOMwebClient:
    return DICOMwebClient(url=base, headers={"Authorization": f"Bearer {token}"})


def test_store_search_and_retrieve_with_dicomweb_client(asgi_server):
    owner = User.objects.create_user("olga")
    reader = User.objects.create_user("rita")
    stranger = User.objects.create_user("sam")
    project = create_project(name="Radiology", description="", owner=owner)
    set_member(project, reader, "reader", actor=owner)
    datasets = [pydicom.dcmread(get_testdata_file(name)) for name in FILES]
    base = f"{asgi_server.url}/dicomweb"

    stored = client_for(f"{base}/projects/{project.pk}", token_for(owner)).store_instances(datasets)
    assert len(stored.ReferencedSOPSequence) == len(FILES) and "FailedSOPSequence" not in stored
    assert Instance.objects.filter(series__study__project=project).count() == len(FILES)

    client = client_for(base, token_for(reader, scopes=("read",)))
    studies = client.search_for_studies()
    ct = datasets[0]
    assert ct.StudyInstanceUID in {s["0020000D"]["Value"][0] for s in studies}
    found = client.search_for_studies(search_filters={"PatientID": ct.PatientID})
    assert [s["0020000D"]["Value"][0] for s in found] == [ct.StudyInstanceUID]
    fuzzy = client.search_for_studies(
        search_filters={"PatientName": str(ct.PatientName).split("^")[0].lower()}, fuzzymatching=True
    )
    assert ct.StudyInstanceUID in {s["0020000D"]["Value"][0] for s in fuzzy}
    limited = client.search_for_studies(limit=1, offset=0)
    assert len(limited) == 1
    series = client.search_for_series(study_instance_uid=ct.StudyInstanceUID)
    assert series[0]["00080060"]["Value"] == ["CT"]
    instances = client.search_for_instances(study_instance_uid=ct.StudyInstanceUID)
    assert instances[0]["00080018"]["Value"] == [ct.SOPInstanceUID]

    retrieved = client.retrieve_study(ct.StudyInstanceUID)
    assert [d.SOPInstanceUID for d in retrieved] == [ct.SOPInstanceUID]
    assert retrieved[0].PixelData == ct.PixelData
    instance = client.retrieve_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert instance.PatientName == ct.PatientName
    metadata = client.retrieve_instance_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert metadata["00100020"]["Value"] == [ct.PatientID]
    bulk_uri = metadata["7FE00010"]["BulkDataURI"]
    assert bulk_uri.startswith(base) and client.retrieve_bulkdata(bulk_uri)[0] == ct.PixelData
    series_metadata = client.retrieve_series_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert len(series_metadata) == 1

    # Someone outside the project finds nothing and retrieves nothing; a reader cannot store.
    outsider = client_for(base, token_for(stranger))
    assert outsider.search_for_studies() == []
    with pytest.raises(Exception, match="404"):
        outsider.retrieve_study(ct.StudyInstanceUID)
    with pytest.raises(Exception, match="403|404"):
        client_for(f"{base}/projects/{project.pk}", token_for(reader)).store_instances(datasets[:1])
    assert Study.objects.filter(project=project).count() == len({d.StudyInstanceUID for d in datasets})
