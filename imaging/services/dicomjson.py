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
    return _value_json(int(tag), vr, raw.value or b"", encoding, max_inline, bulk_uri, always_bulk)


def _value_json(tag: int, vr: str, data: bytes, encoding, max_inline, bulk_uri, always_bulk) -> dict | None:
    """One element's DICOM JSON from its little-endian value bytes, or None: pydicom must say."""
    if vr in BINARY:
        if not data:
            return {"vr": vr}
        if tag in always_bulk or len(data) > max_inline:
            return {"vr": vr, "BulkDataURI": bulk_uri(tag)}
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


# --- Part 10 files read without pydicom --------------------------------------------------------

EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
# VRs whose explicit encoding has two reserved bytes and a 4-byte length
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF


class NotSimple(Exception):  # noqa: N818 - a signal, caught here
    """The file needs pydicom (see `read_part10`)."""


class Part10:
    """What `read_part10` found: the file meta (tag → value bytes), the data set as DICOM JSON,
    and the length of the (native) pixel data, None when encapsulated or absent."""

    __slots__ = ("meta", "attributes", "pixel_length", "encapsulated")

    def __init__(self, meta: dict, attributes: dict, pixel_length: int | None, encapsulated: bool):
        self.meta, self.attributes = meta, attributes
        self.pixel_length, self.encapsulated = pixel_length, encapsulated

    def meta_text(self, tag: int) -> str:
        return self.meta.get(tag, b"").decode("ascii", "replace").rstrip("\0 ")


def read_part10(
    data: bytes,
    bulk_threshold: int,
    bulk_uri: Callable[[int], str],
    always_bulk: frozenset[int] = frozenset(),
    only: frozenset[int] | None = None,
) -> Part10 | None:
    """A DICOM Part 10 file in little endian (explicit VR, implicit VR, or an encapsulated
    transfer syntax) read straight into DICOM JSON, or None when it is anything else or holds
    anything this reader leaves to pydicom: another transfer syntax, character sets beyond
    ASCII/Latin-1/UTF-8, private elements without their VR, ambiguous VRs, values that run past
    the end of the file (pydicom then says what is wrong). The JSON is what `dataset_json` gives
    for the file read by pydicom (imaging/tests/test_dicomjson.py). With `only`, the whole file
    is walked and checked the same way, but only those top-level tags are made JSON (and no
    value of a sequence is)."""
    try:
        return _Reader(data, bulk_threshold, bulk_uri, always_bulk, only).read()
    except (NotSimple, struct.error, UnicodeDecodeError, ValueError, KeyError, IndexError):
        return None


class _Reader:
    def __init__(self, data: bytes, bulk_threshold: int, bulk_uri, always_bulk, only=None):
        self.data, self.bulk_uri, self.always_bulk, self.only = data, bulk_uri, always_bulk, only
        self.max_inline = (bulk_threshold // 4) * 3
        self.encoding = "ascii"
        self.pixel_length: int | None = None
        self.encapsulated = False

    def read(self) -> Part10 | None:
        data = self.data
        if len(data) < 132 or data[128:132] != b"DICM":
            return None
        meta, position = {}, 132
        while position + 8 <= len(data):
            group, element = struct.unpack_from("<HH", data, position)
            if group != 2:
                break
            vr = data[position + 4 : position + 6]
            if vr in LONG_VRS:
                (length,) = struct.unpack_from("<L", data, position + 8)
                start = position + 12
            else:
                (length,) = struct.unpack_from("<H", data, position + 6)
                start = position + 8
            if length == UNDEFINED or start + length > len(data):
                return None
            meta[group << 16 | element] = data[start : start + length]
            position = start + length
        syntax = meta.get(0x00020010, b"").decode("ascii").rstrip("\0 ")
        if syntax == IMPLICIT_LITTLE:
            self.implicit = True
        elif syntax == EXPLICIT_LITTLE or _encapsulated_syntax(syntax):
            self.implicit = False
        else:
            return None  # big endian, deflated, unknown: pydicom
        attributes, end = self.dataset(position, len(data), top=True)
        if end != len(data):
            return None
        return Part10(meta, attributes, self.pixel_length, self.encapsulated)

    def dataset(self, position: int, end: int, top: bool = False, item: bool = False) -> tuple[dict, int]:
        """Elements from `position` up to `end` (or an item delimiter when `item` and undefined)."""
        data, result = self.data, {}
        while position < end:
            if position + 8 > len(data):
                raise NotSimple
            group, element = struct.unpack_from("<HH", data, position)
            tag = group << 16 | element
            if tag == ITEM_END:
                return result, position + 8
            if self.implicit:
                (length,) = struct.unpack_from("<L", data, position + 4)
                start = position + 8
                vr = self.implicit_vr(tag, group, element)
            else:
                raw_vr = data[position + 4 : position + 6]
                if not (b"AA" <= raw_vr <= b"ZZ"):
                    raise NotSimple
                if raw_vr in LONG_VRS:
                    (length,) = struct.unpack_from("<L", data, position + 8)
                    start = position + 12
                else:
                    (length,) = struct.unpack_from("<H", data, position + 6)
                    start = position + 8
                vr = raw_vr.decode("ascii")
                if vr == "UN":
                    raise NotSimple  # pydicom may know its VR (public or private dictionary)
            if tag == 0x00080005 and top:
                self.encoding = self.charset(data[start : start + length])
            if vr == "SQ":
                items, position = self.sequence(start, length)
                if self.only is None or (top and tag in self.only):
                    result[f"{tag:08X}"] = {"vr": "SQ", "Value": items}
                continue
            if length == UNDEFINED:
                if tag != 0x7FE00010 or not top:
                    raise NotSimple
                position = self.fragments(start)
                self.encapsulated = True
                result[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": self.bulk_uri(tag)}
                continue
            if start + length > len(data):
                raise NotSimple  # cut off: pydicom's reading says how
            value = data[start : start + length]
            if tag == 0x7FE00010 and top:
                self.pixel_length = length
            if group == 0xFFFE:
                raise NotSimple
            if group & 1 and element < 0x100 and element >= 0x10:
                vr = "LO" if self.implicit else vr  # private creator
            if self.only is not None and not (top and tag in self.only):
                position = start + length
                continue
            json = _value_json(
                tag, vr, value, self.encoding, self.max_inline, self.bulk_uri, self.always_bulk
            )
            if json is None:
                raise NotSimple
            result[f"{tag:08X}"] = json
            position = start + length
        if item:
            raise NotSimple  # an undefined-length item must end with its delimiter
        return result, position

    def implicit_vr(self, tag: int, group: int, element: int) -> str:
        if group & 1:
            if 0x10 <= element < 0x100:
                return "LO"  # private creator
            raise NotSimple  # a private element: its VR is in pydicom's private dictionary
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            raise NotSimple from None
        if " or " in vr or vr == "UN":
            raise NotSimple
        return vr

    def sequence(self, start: int, length: int) -> tuple[list, int]:
        data, items = self.data, []
        end = start + length if length != UNDEFINED else len(self.data)
        if length != UNDEFINED and end > len(data):
            raise NotSimple
        position = start
        while position < end:
            if position + 8 > len(data):
                raise NotSimple
            tag = struct.unpack_from("<HH", data, position)
            tag = tag[0] << 16 | tag[1]
            (item_length,) = struct.unpack_from("<L", data, position + 4)
            if tag == SEQUENCE_END:
                return items, position + 8
            if tag != ITEM:
                raise NotSimple
            if item_length == UNDEFINED:
                item, position = self.dataset(position + 8, len(data), item=True)
            else:
                if position + 8 + item_length > end:
                    raise NotSimple
                item, after = self.dataset(position + 8, position + 8 + item_length)
                if after != position + 8 + item_length:
                    raise NotSimple
                position = after
            items.append(item)
        if length == UNDEFINED:
            raise NotSimple  # no sequence delimiter before the end of the file
        return items, end

    def fragments(self, position: int) -> int:
        """Skip encapsulated pixel data (items up to the sequence delimiter)."""
        data = self.data
        while position + 8 <= len(data):
            group, element, length = struct.unpack_from("<HHL", data, position)
            tag = group << 16 | element
            if tag == SEQUENCE_END:
                return position + 8
            if tag != ITEM or length == UNDEFINED or position + 8 + length > len(data):
                raise NotSimple
            position += 8 + length
        raise NotSimple

    @staticmethod
    def charset(value: bytes) -> str:
        name = value.decode("ascii").strip("\0 ")
        if "\\" in name or name not in SIMPLE_CHARSETS:
            raise NotSimple
        return SIMPLE_CHARSETS[name]


def _encapsulated_syntax(syntax: str) -> bool:
    """Compressed transfer syntaxes: explicit VR little endian, pixel data in fragments."""
    from pydicom.uid import UID

    uid = UID(syntax)
    return (
        bool(syntax)
        and uid.is_transfer_syntax
        and uid.is_compressed
        and uid.is_little_endian
        and not uid.is_deflated
    )
