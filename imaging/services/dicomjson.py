"""A dataset as DICOM JSON (PS3.18 Annex F), straight from the raw elements of a parsed file.

pydicom's `Dataset.to_json_dict` first turns every raw element into a full `DataElement` (value
conversion, validation, stored back into the dataset) and then into JSON; for the few hundred
elements of an image header that is most of the time an ingest spends per instance. Here the
common cases go straight from the raw bytes to JSON values: text in the default repertoire,
Latin-1 or UTF-8, numbers, tags and binary values. Anything else (other character sets,
ambiguous VRs such as "US or SS", elements already converted, e.g. by de-identification) goes
through pydicom, element by element, so the result is the same as `to_json_dict` gives
(imaging/tests/test_dicomjson.py compares them on all of pydicom's test files).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

# VRs whose value is text: multi-valued (split on backslash) or a single value.
MULTI_TEXT = {"AE", "AS", "CS", "DA", "DT", "TM", "UI", "SH", "LO", "UC", "PN"}
SINGLE_TEXT = {"LT", "ST", "UT", "UR"}
CHARSET_TEXT = {"SH", "LO", "UC", "PN", "LT", "ST", "UT"}  # decoded with SpecificCharacterSet
BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
SIMPLE_CHARSETS = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


def dataset_json(
    dataset,
    bulk_threshold: int,
    bulk_uri: Callable[[int], str],
    always_bulk: frozenset[int] = frozenset(),
    _encoding: tuple[bool, bool] | None = None,
) -> dict:
    """The dataset as a DICOM JSON object: binary values longer than `bulk_threshold` (as base64,
    the way pydicom counts) and the tags in `always_bulk` become `{"BulkDataURI": bulk_uri(tag)}`."""
    if _encoding is None:  # the file's; sequence items are read the same way
        little = dataset.is_little_endian if dataset.is_little_endian is not None else True
        implicit = dataset.is_implicit_VR if dataset.is_implicit_VR is not None else True
        _encoding = (little, implicit)
    little, implicit = _encoding
    charset = dataset.get("SpecificCharacterSet", "") if "SpecificCharacterSet" in dataset else ""
    if not isinstance(charset, str):  # several character sets: only pydicom knows
        charset = None
    encoding = SIMPLE_CHARSETS.get(charset.strip() if isinstance(charset, str) else "", None)
    if charset is not None and charset.strip() not in SIMPLE_CHARSETS:
        encoding = None
    max_inline = (bulk_threshold // 4) * 3
    result: dict = {}
    for tag, element in dataset._dict.items():
        key = f"{tag:08X}"
        value = None
        if isinstance(element, RawDataElement) and little:
            value = _raw_json(element, tag, encoding, max_inline, bulk_uri, always_bulk)
        if value is None:
            value = _pydicom_json(dataset, tag, bulk_threshold, bulk_uri, always_bulk, _encoding)
        result[key] = value
    return result


def _pydicom_json(dataset, tag, bulk_threshold, bulk_uri, always_bulk, encoding) -> dict:
    element = dataset[tag]
    if element.VR == "SQ":
        items = element.value or []
        return {
            "vr": "SQ",
            "Value": [dataset_json(item, bulk_threshold, bulk_uri, always_bulk, encoding) for item in items],
        }
    data = element.to_json_dict(lambda e: bulk_uri(int(e.tag)), bulk_threshold)
    if int(tag) in always_bulk and "InlineBinary" in data:
        data = {"vr": data["vr"], "BulkDataURI": bulk_uri(int(tag))}
    return data


def _raw_json(raw: RawDataElement, tag, encoding, max_inline, bulk_uri, always_bulk) -> dict | None:
    vr = raw.VR
    if not vr:
        try:
            vr = dictionary_VR(Tag(tag))
        except KeyError:
            return None  # private or unknown: pydicom knows private dictionaries
    if vr in ("SQ", "UN") or " or " in vr:
        return None  # sequences, unknown and ambiguous VRs: through pydicom
    data = raw.value
    if data is None:
        data = b""
    if vr in BINARY:
        if not data:
            return {"vr": vr}
        if int(tag) in always_bulk or len(data) > max_inline:
            return {"vr": vr, "BulkDataURI": bulk_uri(int(tag))}
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}
    if vr in NUMBERS:
        size = struct.calcsize("<" + NUMBERS[vr])
        if not data:
            return {"vr": vr}
        if len(data) % size:
            return None
        numbers = list(struct.unpack(f"<{len(data) // size}{NUMBERS[vr]}", data))
        if vr in ("FL", "FD"):
            numbers = [float(n) for n in numbers]
        return {"vr": vr, "Value": numbers}
    if vr == "AT":
        if not data:
            return {"vr": vr}
        if len(data) % 4:
            return None
        pairs = struct.unpack(f"<{len(data) // 2}H", data)
        return {"vr": vr, "Value": [f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, len(pairs), 2)]}
    if vr in ("IS", "DS"):
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            return None
        text = text.rstrip("\0 ")
        if not text:
            return {"vr": vr}
        values = []
        for part in text.split("\\"):
            part = part.strip()
            if not part:
                values.append(None)
                continue
            try:
                values.append(int(part) if vr == "IS" else float(part))
            except ValueError:
                if vr == "IS":
                    try:
                        number = float(part)
                    except ValueError:
                        return None
                    if not number.is_integer():
                        return None
                    values.append(int(number))
                    continue
                return None
        return {"vr": vr, "Value": values}
    if vr in MULTI_TEXT or vr in SINGLE_TEXT:
        if vr in CHARSET_TEXT:
            if encoding is None:
                return None
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                return None
        else:
            try:
                text = data.decode("ascii")
            except UnicodeDecodeError:
                return None
        if vr in SINGLE_TEXT:
            text = text.rstrip("\0 ")
            return {"vr": vr, "Value": [text]} if text else {"vr": vr}
        if vr in CHARSET_TEXT:  # each value loses its padding (as pydicom's convert_text)
            if not text.rstrip("\0 "):
                return {"vr": vr}
            parts = [p.rstrip("\0 ") for p in text.split("\\")]
        else:  # only the whole value's padding goes (as pydicom's multi_string)
            text = text.rstrip("\0 ")
            if not text:
                return {"vr": vr}
            parts = text.split("\\")
        if vr == "PN":
            values = []
            for part in parts:
                groups = part.split("=")
                name = {"Alphabetic": groups[0]}
                if len(groups) > 1:
                    name["Ideographic"] = groups[1]
                if len(groups) > 2:
                    name["Phonetic"] = groups[2]
                values.append(name)
            return {"vr": vr, "Value": values}
        return {"vr": vr, "Value": parts}
    return None
