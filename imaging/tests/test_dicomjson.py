"""The fast DICOM JSON of the index gives what pydicom's `to_json_dict` gives, on every test file
pydicom ships (little and big endian, implicit and explicit VR, character sets, private and
unknown elements, sequences, pixel data of every kind)."""

from __future__ import annotations

import warnings

import pydicom
import pytest
from pydicom.data import get_testdata_files

from imaging.services.dicomjson import dataset_json
from imaging.services.ingest import BULK_THRESHOLD, PIXEL_TAGS, attributes_json


def reference(dataset) -> dict:
    data = dataset.to_json_dict(
        bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=lambda e: f"bulk:{e.tag:08X}"
    )
    for tag in PIXEL_TAGS:
        if tag in data and "InlineBinary" in data[tag]:
            data[tag] = {"vr": data[tag]["vr"], "BulkDataURI": f"bulk:{tag}"}
    return data


def readable_files() -> list[str]:
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in get_testdata_files():
            try:
                reference(pydicom.dcmread(path))
            except Exception:  # noqa: BLE001, S112 - files pydicom itself cannot turn into JSON
                continue
            found.append(path)
    return found


def test_same_json_as_pydicom_on_all_its_test_files():
    files = readable_files()
    assert len(files) > 100
    differing = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            ours = attributes_json(pydicom.dcmread(path))
            if ours != reference(pydicom.dcmread(path)):
                differing.append(path.rsplit("/", 1)[-1])
    assert not differing


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192", "ISO_IR 144"])
def test_names_in_other_character_sets(tmp_path, charset):
    from pydicom.data import get_testdata_file

    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.SpecificCharacterSet = charset
    dataset.PatientName = {
        "ISO_IR 100": "Müller^Jörg",
        "ISO_IR 192": "Ærøskøbing^Ωmega",
        "ISO_IR 144": "Иванов^Иван",
    }[charset]
    dataset.StudyDescription = "CT  "  # padding goes, inner spaces stay
    dataset.save_as(tmp_path / "x.dcm")
    stored = pydicom.dcmread(tmp_path / "x.dcm")
    ours = dataset_json(stored, BULK_THRESHOLD, lambda tag: f"bulk:{tag:08X}")
    assert ours == reference(pydicom.dcmread(tmp_path / "x.dcm"))
    assert ours["00081030"]["Value"] == ["CT"]


def test_files_read_without_pydicom_give_the_same_json():
    """`read_part10` (the ingest's common path) reads little-endian Part 10 files straight into
    DICOM JSON; whatever it takes gives what pydicom gives, and it leaves the rest to pydicom."""
    import os

    from imaging.services.dicomjson import read_part10
    from imaging.services.ingest import PIXEL_TAG_NUMBERS

    taken, left = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in readable_files():
            if os.path.isdir(path):
                continue
            with open(path, "rb") as handle:
                read = read_part10(
                    handle.read(), BULK_THRESHOLD, lambda tag: f"bulk:{tag:08X}", PIXEL_TAG_NUMBERS
                )
            name = path.rsplit("/", 1)[-1]
            if read is None:
                left.append(name)
                continue
            taken.append(name)
            assert read.attributes == reference(pydicom.dcmread(path)), name
    assert {"CT_small.dcm", "MR_small.dcm", "JPEG-lossy.dcm", "rtplan.dcm", "liver_1frame.dcm"} <= set(taken)
    assert {"MR_small_bigendian.dcm", "image_dfl.dcm"} <= set(left)  # big endian, deflated
    assert len(taken) > 100


def test_cut_off_files_are_left_to_pydicom():
    from pydicom.data import get_testdata_file

    from imaging.services.dicomjson import read_part10

    with open(get_testdata_file("CT_small.dcm"), "rb") as handle:
        data = handle.read()
    assert read_part10(data, BULK_THRESHOLD, str) is not None
    for cut in (len(data) - 1, len(data) // 2, 200, 131):
        assert read_part10(data[:cut], BULK_THRESHOLD, str) is None
