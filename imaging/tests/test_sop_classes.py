"""The SOP classes the DICOM issue names – CT, MR, PET, RT plan, structure set and dose,
segmentation, structured report, multi-frame ultrasound, secondary capture (RGB) and whole slide
microscopy – each ingested once: the index has it with the right hierarchy, QIDO-RS finds it by
its attributes, WADO-RS serves its metadata, and the image kinds render."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from imaging.models import IngestRun, Instance
from imaging.services.ingest import PIXEL_TAGS, run_ingest
from imaging.tests.conftest import dicom_file

pytestmark = pytest.mark.django_db

PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
WSI_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.6"


@dataclass(frozen=True)
class Kind:
    source: str  # a pydicom test file, or "built" (made by the test)
    sop_class: str
    modality: str
    frames: int = 1
    image: bool = True


KINDS = {
    "CT": Kind("CT_small.dcm", "1.2.840.10008.5.1.4.1.1.2", "CT"),
    "MR": Kind("MR_small.dcm", "1.2.840.10008.5.1.4.1.1.4", "MR"),
    "PT": Kind("built", PET_STORAGE, "PT"),  # pydicom has no PET file: CT_small made one
    "RT plan": Kind("rtplan.dcm", "1.2.840.10008.5.1.4.1.1.481.5", "RTPLAN", image=False),
    "RT structure set": Kind("rtstruct.dcm", "1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", image=False),
    "RT dose": Kind("rtdose.dcm", "1.2.840.10008.5.1.4.1.1.481.2", "RTDOSE", frames=15),
    "SEG": Kind("liver_1frame.dcm", "1.2.840.10008.5.1.4.1.1.66.4", "SEG"),
    "SR": Kind("reportsi.dcm", "1.2.840.10008.5.1.4.1.1.88.11", "SR", image=False),  # Basic Text SR
    "US multi-frame": Kind("examples_ybr_color.dcm", "1.2.840.10008.5.1.4.1.1.3.1", "US", frames=30),
    "secondary capture RGB": Kind("SC_rgb_small_odd.dcm", "1.2.840.10008.5.1.4.1.1.7", "OT"),
    "WSI": Kind("built", WSI_STORAGE, "SM", frames=4),
}


def _part10(dataset: Dataset, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    dataset.file_meta = meta
    dataset.save_as(path, enforce_file_format=True)
    return path


def pet_image(path: Path) -> Path:
    """A PET image: CT_small's pixels as PET Image Storage, new UIDs and patient, PET attributes."""
    dataset = pydicom.dcmread(dicom_file("CT_small.dcm"))
    dataset.SOPClassUID = PET_STORAGE
    dataset.Modality = "PT"
    dataset.SOPInstanceUID, dataset.StudyInstanceUID = generate_uid(), generate_uid()
    dataset.SeriesInstanceUID, dataset.FrameOfReferenceUID = generate_uid(), generate_uid()
    dataset.PatientID, dataset.PatientName = "PET-0001", "Positron^Paula"
    dataset.ImageType = ["ORIGINAL", "PRIMARY"]
    dataset.SeriesType = ["STATIC", "IMAGE"]
    dataset.Units = "BQML"
    dataset.CorrectedImage = ["DECY", "ATTN"]
    dataset.DecayCorrection = "START"
    dataset.RescaleSlope, dataset.RescaleIntercept = "0.5", "0"
    dataset.ImageIndex = 1
    dataset.SeriesDescription = "PET WB static"
    return _part10(dataset, path)


def whole_slide_image(path: Path, tile: int = 64, across: int = 2, down: int = 2) -> Path:
    """A VL Whole Slide Microscopy Image: TILED_FULL, `across` × `down` RGB tiles of `tile` pixels."""
    dataset = Dataset()
    dataset.SOPClassUID = WSI_STORAGE
    dataset.SOPInstanceUID, dataset.StudyInstanceUID = generate_uid(), generate_uid()
    dataset.SeriesInstanceUID, dataset.FrameOfReferenceUID = generate_uid(), generate_uid()
    dataset.PatientID, dataset.PatientName = "WSI-0001", "Slide^Sam"
    dataset.PatientBirthDate, dataset.PatientSex = "19700101", "F"
    dataset.StudyDate, dataset.StudyTime = "20250301", "101500"
    dataset.ContentDate, dataset.ContentTime = "20250301", "101500"
    dataset.AcquisitionDateTime = "20250301101500"
    dataset.AccessionNumber, dataset.StudyID, dataset.ReferringPhysicianName = "WSI42", "1", ""
    dataset.StudyDescription, dataset.SeriesDescription = "Lung biopsy", "H&E 20x"
    dataset.Modality, dataset.SeriesNumber, dataset.InstanceNumber = "SM", 1, 1
    dataset.Manufacturer, dataset.ManufacturerModelName = "Test scanner", "TS-1"
    dataset.DeviceSerialNumber, dataset.SoftwareVersions = "SN-1", "1.0"
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    dataset.BurnedInAnnotation, dataset.SpecimenLabelInImage = "NO", "NO"
    dataset.LossyImageCompression = "00"
    dataset.VolumetricProperties, dataset.FocusMethod, dataset.ExtendedDepthOfField = "VOLUME", "AUTO", "NO"
    dataset.PositionReferenceIndicator = "SLIDE_CORNER"
    dataset.DimensionOrganizationType = "TILED_FULL"
    dataset.Rows = dataset.Columns = tile
    dataset.NumberOfFrames = across * down
    dataset.TotalPixelMatrixColumns, dataset.TotalPixelMatrixRows = tile * across, tile * down
    dataset.TotalPixelMatrixFocalPlanes, dataset.NumberOfOpticalPaths = 1, 1
    dataset.ImagedVolumeWidth, dataset.ImagedVolumeHeight = 0.25 * tile * across, 0.25 * tile * down
    dataset.ImagedVolumeDepth = 0.001
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, "RGB", 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem, origin.YOffsetInSlideCoordinateSystem = 20.0, 40.0
    dataset.TotalPixelMatrixOriginSequence = Sequence([origin])
    dataset.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.00025, 0.00025], 0.001
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.WholeSlideMicroscopyImageFrameTypeSequence = Sequence([frame_type])
    dataset.SharedFunctionalGroupsSequence = Sequence([shared])
    dataset.ContainerIdentifier = "SLIDE-1"
    dataset.IssuerOfTheContainerIdentifierSequence = Sequence()
    container_type = Dataset()
    container_type.CodeValue, container_type.CodingSchemeDesignator = "433466003", "SCT"
    container_type.CodeMeaning = "Microscope slide"
    dataset.ContainerTypeCodeSequence = Sequence([container_type])
    specimen = Dataset()
    specimen.SpecimenIdentifier, specimen.SpecimenUID = "SPECIMEN-1", generate_uid()
    specimen.IssuerOfTheSpecimenIdentifierSequence = Sequence()
    specimen.SpecimenPreparationSequence = Sequence()
    dataset.SpecimenDescriptionSequence = Sequence([specimen])
    illumination = Dataset()
    illumination.CodeValue, illumination.CodingSchemeDesignator = "111744", "DCM"
    illumination.CodeMeaning = "Brightfield illumination"
    path_item = Dataset()
    path_item.OpticalPathIdentifier = "1"
    path_item.IlluminationTypeCodeSequence = Sequence([illumination])
    path_item.IlluminationWaveLength = 550.0
    dataset.OpticalPathSequence = Sequence([path_item])
    # each tile a colour of its own, so frames can be told apart
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 60)]
    tiles = np.zeros((across * down, tile, tile, 3), np.uint8)
    for number in range(across * down):
        tiles[number] = colours[number % len(colours)]
    dataset.PixelData = tiles.tobytes()
    return _part10(dataset, path)


@pytest.fixture
def indexed(project, people, data_dir, tmp_path):
    """Every kind ingested in one upload run: {kind: (source dataset, Instance)} and the run."""
    files = {}
    for name, kind in KINDS.items():
        if kind.source != "built":
            files[name] = dicom_file(kind.source)
    files["PT"] = pet_image(tmp_path / "pet.dcm")
    files["WSI"] = whole_slide_image(tmp_path / "wsi.dcm")
    run = IngestRun.objects.create(project=project, source="upload", created_by=people["writer"])
    run_ingest(run, [(name, path) for name, path in files.items()])
    found = {}
    for name, path in files.items():
        source = pydicom.dcmread(path, force=True)
        instance = Instance.objects.select_related("series__study__patient").filter(
            series__study__project=project, sop_instance_uid=source.SOPInstanceUID
        )
        found[name] = (source, instance.first())
    return found, run


def instance_url(source) -> str:
    return (
        f"/dicomweb/studies/{source.StudyInstanceUID}/series/{source.SeriesInstanceUID}"
        f"/instances/{source.SOPInstanceUID}"
    )


def answer(response) -> list[dict]:
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == "application/dicom+json"
    return json.loads(response.content)


def test_each_kind_lands_with_its_hierarchy(indexed, project):
    found, run = indexed
    assert run.accepted == len(KINDS) and run.rejected == 0 and run.conflicts == 0, run.report
    for name, kind in KINDS.items():
        source, instance = found[name]
        assert instance is not None, (name, run.report)
        series, study = instance.series, instance.series.study
        assert study.project == project
        assert study.study_uid == source.StudyInstanceUID, name
        assert series.series_uid == source.SeriesInstanceUID, name
        assert study.patient.patient_id == str(source.get("PatientID", "") or ""), name
        assert series.modality == kind.modality == source.Modality, name
        assert instance.sop_class_uid == kind.sop_class == source.SOPClassUID, name
        assert instance.frames == kind.frames, name
        if kind.image:
            assert (instance.rows, instance.columns) == (source.Rows, source.Columns), name
        else:
            assert instance.rows is None and instance.columns is None, name
        assert kind.modality in study.modalities and study.instance_count >= 1, name
        assert series.instance_count == 1, name
        assert not [f for f in series.quality if f["severity"] == "error"], (name, series.quality)
        assert pydicom.dcmread(instance.full_path).SOPInstanceUID == source.SOPInstanceUID
    wsi = found["WSI"][1]
    assert wsi.attributes["00480006"]["Value"] == [128] and wsi.attributes["00480007"]["Value"] == [128]
    assert wsi.attributes["00209311"]["Value"] == ["TILED_FULL"]


def searchable(source) -> dict[str, str]:
    """The top-level attributes a QIDO query can name with their value as text: single-valued
    strings, dates and UIDs (no wildcard or list characters), from the file."""
    found = {}
    for element in source:
        if element.tag.group in (0x0002, 0x7FE0) or element.tag.is_private or element.VR == "SQ":
            continue
        if element.VR not in ("AE", "CS", "DA", "LO", "SH", "TM", "UI", "DT") or element.VM != 1:
            continue
        text = str(element.value).strip()
        if element.VR in ("DA", "DT", "TM") and "-" in text:
            continue  # a range
        if text and not any(c in text for c in "*?\\,"):
            found[f"{int(element.tag):08X}"] = text
    return found


def test_each_kind_is_found_by_qido(indexed, api):
    found, _ = indexed
    client = api("reader")
    for name, kind in KINDS.items():
        source, _ = found[name]
        study, series, sop = source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID
        instances = answer(client.get(f"/dicomweb/instances?SOPClassUID={kind.sop_class}"))
        assert sop in {i["00080018"]["Value"][0] for i in instances}, name
        assert all(i["00080016"]["Value"] == [kind.sop_class] for i in instances), name
        matching_series = answer(client.get(f"/dicomweb/series?Modality={kind.modality}"))
        assert series in {s["0020000E"]["Value"][0] for s in matching_series}, name
        studies = answer(client.get(f"/dicomweb/studies?ModalitiesInStudy={kind.modality}"))
        assert study in {s["0020000D"]["Value"][0] for s in studies}, name
        listed = answer(client.get(f"/dicomweb/studies/{study}/series/{series}/instances"))
        assert [i["00080018"]["Value"][0] for i in listed] == [sop], name
        if kind.frames > 1:
            assert listed[0]["00280008"]["Value"] == [kind.frames], name
        # every non-bulk attribute of the file, by tag, finds the instance (and only what has it)
        for tag, value in searchable(source).items():
            query = urlencode({tag: value})
            hits = answer(client.get(f"/dicomweb/instances?{query}"))
            assert sop in {i["00080018"]["Value"][0] for i in hits}, (name, tag, value)
            by_study = answer(client.get(f"/dicomweb/studies?{query}"))
            assert study in {s["0020000D"]["Value"][0] for s in by_study}, (name, tag, value)


NUMBERS = ("IS", "DS", "US", "SS", "UL", "SL", "FL", "FD")


def numeric_and_names(source) -> dict[str, str]:
    """Top-level single numbers (IS, DS, US …; numbers in DICOM JSON) and person names other
    than the patient's (no index column), with their value as a query gives it."""
    found = {}
    for element in source:
        if element.tag.group in (0x0002, 0x7FE0) or element.tag.is_private or element.VM != 1:
            continue
        if element.VR in NUMBERS or (element.VR == "PN" and element.keyword != "PatientName"):
            text = str(element.value).strip()
            if text and not any(c in text for c in "*?\\,"):
                found[f"{int(element.tag):08X}"] = text
    return found


def test_numeric_and_person_name_attributes_are_found_by_qido(indexed, api):
    found, _ = indexed
    client = api("reader")
    missed = []
    for name in KINDS:
        source, _ = found[name]
        for tag, value in numeric_and_names(source).items():
            hits = answer(client.get(f"/dicomweb/instances?{urlencode({tag: value})}"))
            if source.SOPInstanceUID not in {i["00080018"]["Value"][0] for i in hits}:
                missed.append((name, tag, value))
    assert not missed, missed


def test_each_kind_serves_wado_metadata(indexed, api):
    found, _ = indexed
    client = api("reader")
    for name, kind in KINDS.items():
        source, instance = found[name]
        url = instance_url(source)
        metadata = answer(client.get(f"{url}/metadata"))
        assert len(metadata) == 1, name
        item = metadata[0]
        assert item["00080016"]["Value"] == [kind.sop_class] and item["00080018"]["Value"] == [
            source.SOPInstanceUID
        ]
        assert item["0020000D"]["Value"] == [source.StudyInstanceUID], name
        # every attribute of the file is there: inline, or as a bulk data URL of this service
        expected = {f"{int(e.tag):08X}" for e in source if e.tag.group != 0x0002}
        assert expected <= set(item), (name, sorted(expected - set(item)))
        for tag, entry in item.items():
            if "BulkDataURI" in entry:
                assert entry["BulkDataURI"].endswith(f"{url}/bulkdata/{tag}"), (name, tag)
        if kind.image:
            assert "BulkDataURI" in item["7FE00010"] and "InlineBinary" not in item["7FE00010"], name
            bulk = client.get(f"{url}/bulkdata/7FE00010")
            assert bulk.status_code == 200 and source.PixelData in bulk.content, name
        else:
            assert "7FE00010" not in item, name
        for tag in ("00100010", "00080020", "00080060"):
            if tag in item and "Value" in item[tag]:
                assert item[tag] == instance.attributes[tag], (name, tag)
        assert not any(tag in PIXEL_TAGS and "InlineBinary" in entry for tag, entry in item.items())
    sr = answer(client.get(f"{instance_url(found['SR'][0])}/metadata"))[0]
    assert sr["0040A730"]["vr"] == "SQ" and sr["0040A730"]["Value"], "the SR content tree is served"
    plan = answer(client.get(f"{instance_url(found['RT plan'][0])}/metadata"))[0]
    assert plan["300A00B0"]["vr"] == "SQ" and plan["300A00B0"]["Value"], "the plan's beams are served"
    structures = answer(client.get(f"{instance_url(found['RT structure set'][0])}/metadata"))[0]
    contours = structures["30060039"]["Value"][0]["30060040"]["Value"][0]["30060050"]
    assert "Value" in contours or "BulkDataURI" in contours  # contour data: inline or bulk


def decoded(source, frame: int) -> np.ndarray:
    pixels = source.pixel_array
    return pixels[frame - 1] if int(source.get("NumberOfFrames", 1) or 1) > 1 else pixels


def test_each_image_kind_renders(indexed, api):
    found, _ = indexed
    client = api("reader")
    for name, kind in KINDS.items():
        source, _ = found[name]
        url = instance_url(source)
        if not kind.image:
            response = client.get(f"{url}/rendered", HTTP_ACCEPT="image/png")
            assert response.status_code in (400, 404, 406), (name, response.status_code)
            continue
        for media, frame in (("image/png", 1), ("image/jpeg", 1), ("image/png", kind.frames)):
            path = f"{url}/frames/{frame}/rendered" if frame > 1 else f"{url}/rendered"
            response = client.get(path, HTTP_ACCEPT=media)
            assert response.status_code == 200, (name, path, response.content[:300])
            assert response["Content-Type"] == media, name
            image = Image.open(io.BytesIO(response.content))
            assert image.size == (source.Columns, source.Rows), name
            assert image.mode == ("RGB" if source.SamplesPerPixel == 3 else "L"), (name, image.mode)
            if media == "image/png" and source.SamplesPerPixel == 3:
                # colour as the file has it (YBR shown as its RGB), frame by frame
                difference = np.abs(np.asarray(image).astype(int) - decoded(source, frame).astype(int))
                assert difference.mean() < 2, (name, frame, difference.mean())
        thumbnail = client.get(f"{url}/thumbnail")
        assert thumbnail.status_code == 200 and max(Image.open(io.BytesIO(thumbnail.content)).size) <= 128
    # the slide's tiles are its frames: frame 4 is the fourth colour
    wsi = Image.open(
        io.BytesIO(
            client.get(f"{instance_url(found['WSI'][0])}/frames/4/rendered", HTTP_ACCEPT="image/png").content
        )
    )
    assert wsi.getpixel((10, 10)) == (220, 220, 60)
