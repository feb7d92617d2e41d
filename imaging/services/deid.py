"""De-identification on ingest: the DICOM PS3.15 Annex E Basic Application Level Confidentiality
Profile with options, chosen per project (`DeidSettings`).

Actions follow Table E.1-1 (the action lists of the `dicom-anonymizer` package, edition 2026c):
D – replace with a dummy (patient ID and name: the project's pseudonym), Z – empty, X – remove,
U – replace the UID with the project's pseudonym for it; combined actions take the first that
keeps the file valid (X/Z → Z, X/D and Z/D and X/Z/D → D, X/Z/U* → U). Private attributes, curves
and overlay comments are removed. Options:

- `retain_longitudinal_dates`: dates and times are kept, dates shifted by a per-patient number of
  days (the same for every study of the patient, so intervals survive);
- `retain_patient_characteristics`: sex, age, size, weight, ethnic group, smoking and pregnancy
  status are kept;
- `clean_descriptors`: study, series and protocol descriptions and the like are kept, with the
  patient's name and ID cut out of them;
- `retain_device_identity`: station name, device serial number, institution are kept.

Pseudonyms are deterministic per project (HMAC with a key derived from the server secret), so
the same patient and the same UIDs always map to the same values, ingest after ingest; each
mapping is kept in `Pseudonym`, its original encrypted (AES-GCM), readable by project admins only.
Every change is reported per instance; burned-in annotation is flagged.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imaging.models import DeidSettings, Pseudonym

OPTIONS = (
    "retain_longitudinal_dates",
    "retain_patient_characteristics",
    "clean_descriptors",
    "retain_device_identity",
)
PROFILE_NAME = "Basic Application Confidentiality Profile"
OPTION_CODES = {  # CID 7050 codes, for DeidentificationMethodCodeSequence
    "retain_longitudinal_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
}
PATIENT_CHARACTERISTICS = {0x00100040, 0x00101010, 0x00101020, 0x00101030, 0x00102160, 0x001021A0, 0x001021C0}
DESCRIPTORS = {
    0x00081030,
    0x0008103E,
    0x00181030,
    0x00080070,
    0x00081090,
    0x00400254,
    0x00400007,
    0x00321060,
    0x00204000,
    0x00400280,
    0x00180015,
}
DEVICE_IDENTITY = {
    0x00081010,
    0x00181000,
    0x00080080,
    0x00080081,
    0x00081040,
    0x00181002,
    0x00181004,
    0x00181005,
    0x00181007,
    0x00181008,
    0x00181009,
    0x0018100A,
    0x00181030,
}
NOT_TOUCHED = {0x00080016, 0x00080060, 0x00280010, 0x00280011}  # SOP class, modality, image size


def _tables() -> dict[int, str]:
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    lists = dicom_anonymization_database_selector("dicomfields_2026c")
    actions = {}
    for name, action in (
        ("X_TAGS", "X"),
        ("Z_TAGS", "Z"),
        ("D_TAGS", "D"),
        ("U_TAGS", "U"),
        ("X_Z_TAGS", "Z"),
        ("X_D_TAGS", "D"),
        ("Z_D_TAGS", "D"),
        ("X_Z_D_TAGS", "D"),
        ("X_Z_U_STAR_TAGS", "U"),
    ):
        for entry in lists[name]:
            if len(entry) == 2:
                actions[(entry[0] << 16) | entry[1]] = action
            else:  # a repeating group, e.g. (50xx,xxxx) curves, (60xx,4000) overlay comments
                group, element, group_mask, element_mask = entry
                PATTERNS.append(((group << 16) | element, (group_mask << 16) | element_mask, action))
    return actions


PATTERNS: list[tuple[int, int, str]] = []  # (value, mask, action) for repeating groups


def action_for(tag: int) -> str | None:
    found = actions().get(tag)
    if found is None:
        for value, mask, action in PATTERNS:
            if tag & mask == value:
                return action
    return found


_ACTIONS: dict[int, str] | None = None


def actions() -> dict[int, str]:
    global _ACTIONS
    if _ACTIONS is None:
        _ACTIONS = _tables()
    return _ACTIONS


def project_key(project_id: int, purpose: str) -> bytes:
    from storage.crypto import hkdf_sha256, sealing_secret

    return hkdf_sha256(sealing_secret(), f"imaging-{purpose}:{project_id}".encode())


@dataclass
class Context:
    """What one de-identification run needs and learns (pseudonyms to record, changes made)."""

    project_id: int
    options: set[str]
    pseudonyms: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, original) → pseudonym
    changes: list[dict] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    def digest(self, text: str) -> bytes:
        return hmac.new(project_key(self.project_id, "pseudonym"), text.encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        value = "2.25." + str(int.from_bytes(self.digest("uid:" + original)[:16], "big"))
        self.pseudonyms[("uid", original)] = value
        return value

    def patient(self, original_id: str) -> str:
        value = "PAT-" + base64.b32encode(self.digest("patient:" + original_id)[:10]).decode().rstrip("=")
        self.pseudonyms[("patient", original_id)] = value
        return value

    def day_shift(self, original_id: str) -> int:
        """Days every date of the patient moves back (1 to 3,650), the same for all their studies."""
        return 1 + int.from_bytes(self.digest("dates:" + original_id)[:4], "big") % 3650


DUMMY = {
    "PN": "ANONYMOUS",
    "LO": "ANONYMOUS",
    "SH": "ANON",
    "LT": "",
    "ST": "",
    "UT": "",
    "CS": "",
    "DA": "19000101",
    "TM": "000000.00",
    "DT": "19000101000000.00",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "UI": "2.25.0",
    "AE": "ANON",
    "UN": b"",
    "OB": b"",
    "OW": b"",
}


def _shift(value: str, vr: str, days: int) -> str:
    """A date (DA) or the date part of a date-time (DT) moved back by `days`."""
    text = str(value)
    try:
        day = dt.datetime.strptime(text[:8], "%Y%m%d").date() - dt.timedelta(days=days)
    except ValueError:
        return DUMMY.get(vr, "")
    return day.strftime("%Y%m%d") + (text[8:] if vr == "DT" else "")


def deidentify(dataset, settings: DeidSettings) -> Context:
    """De-identify `dataset` in place; returns what was done (changes, pseudonyms, flags)."""
    context = Context(settings.project_id, set(settings.options or []))
    original_patient = str(dataset.get("PatientID", "") or "") or str(dataset.get("PatientName", "") or "")
    names = [p for p in (str(dataset.get("PatientName", "") or ""), original_patient) if p]
    if str(dataset.get("BurnedInAnnotation", "")).upper() == "YES":
        context.flags.append("burned-in annotation: the pixels show text that may identify the patient")
    elif str(dataset.get("Modality", "")) in ("US", "XC", "OT", "SC") and "PixelData" in dataset:
        context.flags.append(
            "possible burned-in annotation (ultrasound, secondary capture or photo): check the pixels"
        )
    _walk(dataset, context, original_patient, names, top=True)
    dataset.PatientIdentityRemoved = "YES"
    chosen = sorted(context.options)
    dataset.DeidentificationMethod = PROFILE_NAME + ("; " + ", ".join(chosen) if chosen else "")
    if hasattr(dataset, "file_meta") and "MediaStorageSOPInstanceUID" in dataset.file_meta:
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return context


def _walk(dataset, context: Context, patient: str, names: list[str], top: bool) -> None:
    options = context.options
    for element in list(dataset):
        tag = int(element.tag)
        if element.VR == "SQ":
            action = action_for(tag)
            if action == "X" and not _kept(tag, options):
                _record(context, element, "removed")
                del dataset[element.tag]
                continue
            for item in element.value:
                _walk(item, context, patient, names, top=False)
            continue
        if element.tag.is_private:
            _record(context, element, "removed")
            del dataset[element.tag]
            continue
        if tag in NOT_TOUCHED:
            continue
        action = action_for(tag)
        if action is None or _kept(tag, options):
            if action is not None and tag in DESCRIPTORS and "clean_descriptors" in options:
                _clean(element, names, context)
            continue
        if tag == 0x00100020:  # Patient ID
            element.value = context.patient(patient)
            _record(context, element, "pseudonym")
        elif tag == 0x00100010:  # Patient's Name
            element.value = context.patient(patient)
            _record(context, element, "pseudonym")
        elif element.VR in ("DA", "DT") and "retain_longitudinal_dates" in options:
            if element.value:
                values = element.value if element.VM > 1 else [element.value]
                shifted = [_shift(v, element.VR, context.day_shift(patient)) for v in values]
                element.value = shifted if element.VM > 1 else shifted[0]
                _record(context, element, "date shifted")
        elif element.VR == "TM" and "retain_longitudinal_dates" in options:
            continue
        elif action == "U":
            if element.value:
                values = element.value if element.VM > 1 else [element.value]
                new = [context.uid(str(v)) for v in values]
                element.value = new if element.VM > 1 else new[0]
                _record(context, element, "uid replaced")
        elif action == "X":
            _record(context, element, "removed")
            del dataset[element.tag]
        elif action == "Z":
            if element.value not in (None, "", b""):
                element.value = b"" if element.VR in ("OB", "OW", "UN") else ""
                _record(context, element, "emptied")
        else:  # D
            element.value = DUMMY.get(element.VR, "")
            _record(context, element, "replaced")


def _kept(tag: int, options: set[str]) -> bool:
    return (
        ("retain_patient_characteristics" in options and tag in PATIENT_CHARACTERISTICS)
        or ("clean_descriptors" in options and tag in DESCRIPTORS)
        or ("retain_device_identity" in options and tag in DEVICE_IDENTITY)
    )


def _clean(element, names: list[str], context: Context) -> None:
    text = str(element.value or "")
    cleaned = text
    for name in names:
        for part in {name, *name.replace("^", " ").split()}:
            if len(part) >= 3:
                cleaned = cleaned.replace(part, "")
    if cleaned != text:
        element.value = cleaned.strip()
        _record(context, element, "cleaned")


def _record(context: Context, element, action: str) -> None:
    context.changes.append(
        {"tag": f"{int(element.tag):08X}", "keyword": element.keyword or "", "action": action}
    )


def _cipher(project_id: int) -> AESGCM:
    return AESGCM(project_key(project_id, "reidentification"))


def record_pseudonyms(context: Context) -> None:
    """Keep each new mapping with its original encrypted (the re-identification table)."""
    cipher = _cipher(context.project_id)
    for (kind, original), pseudonym in context.pseudonyms.items():
        if Pseudonym.objects.filter(project_id=context.project_id, kind=kind, pseudonym=pseudonym).exists():
            continue
        nonce = os.urandom(12)
        sealed = nonce + cipher.encrypt(nonce, original.encode(), f"{context.project_id}:{kind}".encode())
        Pseudonym.objects.get_or_create(
            project_id=context.project_id, kind=kind, pseudonym=pseudonym, defaults={"original": sealed}
        )


def reveal(pseudonym: Pseudonym) -> str:
    """The original behind a pseudonym (for project admins)."""
    data = bytes(pseudonym.original)
    return (
        _cipher(pseudonym.project_id)
        .decrypt(data[:12], data[12:], f"{pseudonym.project_id}:{pseudonym.kind}".encode())
        .decode()
    )
