"""QIDO-RS matching (PS3.18 §8.3.4) over the index, and the DICOM JSON of its rows.

Query keys are attribute keywords or tags (`PatientName` or `00100010`). Matching: single values
(exact; `*` and `?` wildcards; fuzzy, case-insensitive matching of person names with
`fuzzymatching=true`), UID lists (comma-separated), date and time ranges (`20240101-20241231`,
`-20241231`, `20240101-`). A key the index has no column for is matched against the attributes of
the instances (DICOM JSON, exact first value), so any tag can be searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db.models import (
    Case,
    Exists,
    ExpressionWrapper,
    F,
    Func,
    JSONField,
    OuterRef,
    Q,
    QuerySet,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast, Concat

from imaging.models import Instance, Series, Study

RESERVED = {"limit", "offset", "includefield", "fuzzymatching", "format"}


@dataclass(frozen=True)
class Key:
    tag: str
    vr: str
    field: dict  # level → queryset lookup path


KEYS: dict[str, Key] = {
    "PatientName": Key(
        "00100010",
        "PN",
        {
            "study": "patient__name",
            "series": "study__patient__name",
            "instance": "series__study__patient__name",
        },
    ),
    "PatientID": Key(
        "00100020",
        "LO",
        {
            "study": "patient__patient_id",
            "series": "study__patient__patient_id",
            "instance": "series__study__patient__patient_id",
        },
    ),
    "PatientBirthDate": Key("00100030", "DA", {"study": "patient__birth_date"}),
    "PatientSex": Key("00100040", "CS", {"study": "patient__sex"}),
    "StudyInstanceUID": Key(
        "0020000D",
        "UI",
        {"study": "study_uid", "series": "study__study_uid", "instance": "series__study__study_uid"},
    ),
    "StudyDate": Key(
        "00080020",
        "DA",
        {"study": "study_date", "series": "study__study_date", "instance": "series__study__study_date"},
    ),
    "StudyTime": Key("00080030", "TM", {"study": "study_time"}),
    "AccessionNumber": Key(
        "00080050",
        "SH",
        {
            "study": "accession_number",
            "series": "study__accession_number",
            "instance": "series__study__accession_number",
        },
    ),
    "StudyDescription": Key("00081030", "LO", {"study": "description"}),
    "StudyID": Key("00200010", "SH", {"study": "study_id"}),
    "ReferringPhysicianName": Key("00080090", "PN", {"study": "referring_physician"}),
    "ModalitiesInStudy": Key("00080061", "CS", {"study": "series__modality"}),
    "SeriesInstanceUID": Key("0020000E", "UI", {"series": "series_uid", "instance": "series__series_uid"}),
    "Modality": Key("00080060", "CS", {"series": "modality", "instance": "series__modality"}),
    "SeriesNumber": Key("00200011", "IS", {"series": "number"}),
    "SeriesDescription": Key("0008103E", "LO", {"series": "description"}),
    "BodyPartExamined": Key("00180015", "CS", {"series": "body_part"}),
    "SOPInstanceUID": Key("00080018", "UI", {"instance": "sop_instance_uid"}),
    "SOPClassUID": Key("00080016", "UI", {"instance": "sop_class_uid"}),
    "InstanceNumber": Key("00200013", "IS", {"instance": "number"}),
}
BY_TAG = {key.tag: name for name, key in KEYS.items()}


class QueryError(ValueError):
    """A query parameter that cannot be used; the message says which and why."""


def keyword_of(name: str) -> str | None:
    """The keyword of a query key given as keyword or tag (None for an unknown keyword)."""
    from pydicom.datadict import keyword_for_tag, tag_for_keyword

    upper = name.upper()
    if re.fullmatch(r"[0-9A-F]{8}", upper):
        return BY_TAG.get(upper) or keyword_for_tag(int(upper, 16)) or upper
    if tag_for_keyword(name) is not None:
        return name
    return None


def tag_of(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    if re.fullmatch(r"[0-9A-F]{8}", keyword):
        return keyword
    if keyword in KEYS:
        return KEYS[keyword].tag
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise QueryError(f"{keyword!r} is neither a DICOM keyword nor a tag.")
    return f"{tag:08X}"


def _wildcard(value: str) -> str:
    return "^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value) + "$"


def _range(lookup: str, value: str) -> Q:
    start, _, end = value.partition("-")
    if not all(part == "" or part.replace(".", "").isdigit() for part in (start, end)):
        raise QueryError(f"{value!r} is not a date, time or range of them.")
    condition = Q()
    if start:
        condition &= Q(**{f"{lookup}__gte": start})
    if end:
        condition &= Q(**{f"{lookup}__lte": end})
    return condition


def _match(lookup: str, vr: str, value: str, fuzzy: bool) -> Q:
    if vr == "UI":
        uids = [v.strip() for v in value.replace("\\", ",").split(",") if v.strip()]
        return Q(**{f"{lookup}__in": uids})
    if vr in ("DA", "TM", "DT") and "-" in value:
        return _range(lookup, value)
    if vr == "IS":
        if not value.lstrip("-").isdigit():
            raise QueryError(f"{value!r} is not a whole number.")
        return Q(**{lookup: int(value)})
    if vr == "PN" and fuzzy:
        # each name component may start with what was asked, in any case
        words = [w for w in re.split(r"[\s^,]+", value.replace("*", "")) if w]
        condition = Q()
        for word in words:
            condition &= Q(**{f"{lookup}__iregex": r"(^|[\s^,])" + re.escape(word)})
        return condition
    if "*" in value or "?" in value:
        return Q(**{f"{lookup}__{'iregex' if vr == 'PN' else 'regex'}": _wildcard(value)})
    return Q(**{f"{lookup}__iexact" if vr == "PN" else lookup: value})


NUMBER_VRS = {"IS", "DS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"}


def _attribute_match(tag: str, value: str) -> Q:
    """Instances with `value` among the values of `tag` in their DICOM JSON, where numbers (IS, DS,
    US …) are JSON numbers and person names {"Alphabetic": …} objects."""
    from pydicom.datadict import dictionary_VR

    try:
        vr = dictionary_VR(int(tag, 16))
    except KeyError:  # a private or unknown tag: as text
        vr = ""
    wanted: object = value
    if set(vr.split(" or ")) & NUMBER_VRS:  # also "US or SS" (pixel values)
        try:
            wanted = float(value)
        except ValueError:
            raise QueryError(f"{value!r} is not a number.") from None
    elif vr == "PN":
        wanted = {"Alphabetic": value}
    return Q(attributes__contains={tag: {"Value": [wanted]}})


def filter_level(found: QuerySet, level: str, params, fuzzy: bool) -> QuerySet:
    """Apply the query keys of `params` to a queryset of `level` (study, series, instance)."""
    for name, values in params.lists():
        if name in RESERVED or not values or values == [""]:
            continue
        keyword = keyword_of(name)
        if keyword is None:
            raise QueryError(f"{name!r} is neither a DICOM keyword nor a tag.")
        value = values[-1]
        key = KEYS.get(keyword)
        if key is not None and level in key.field:
            found = found.filter(_match(key.field[level], key.vr, value, fuzzy))
            if keyword == "ModalitiesInStudy":
                found = found.distinct()
            continue
        # any other attribute: instances with exactly this among its values
        instances = Instance.objects.filter(_attribute_match(tag_of(keyword), value))
        if level == "instance":
            found = found.filter(pk__in=instances.values("pk"))
        elif level == "series":
            found = found.filter(Exists(instances.filter(series=OuterRef("pk"))))
        else:
            found = found.filter(Exists(instances.filter(series__study=OuterRef("pk"))))
    return found


def paginate(found: QuerySet, params) -> QuerySet:
    try:
        offset = int(params.get("offset", 0) or 0)
        limit = int(params.get("limit", 1000) or 1000)
    except ValueError:
        raise QueryError("limit and offset are whole numbers.") from None
    if offset < 0 or limit < 1:
        raise QueryError("limit is at least 1 and offset at least 0.")
    return found[offset : offset + min(limit, 10_000)]


def _element(vr: str, value) -> dict:
    if value in (None, "", []):
        return {"vr": vr}
    values = value if isinstance(value, list) else [value]
    if vr == "PN":
        values = [{"Alphabetic": str(v)} for v in values]
    return {"vr": vr, "Value": values}


def study_json(study: Study, base: str, extra: dict | None = None) -> dict:
    patient = study.patient
    data = {
        "00080020": _element("DA", study.study_date),
        "00080030": _element("TM", study.study_time),
        "00080050": _element("SH", study.accession_number),
        "00080061": _element("CS", list(study.modalities)),
        "00080090": _element("PN", study.referring_physician),
        "00081030": _element("LO", study.description),
        "00100010": _element("PN", patient.name),
        "00100020": _element("LO", patient.patient_id),
        "00100030": _element("DA", patient.birth_date),
        "00100040": _element("CS", patient.sex),
        "0020000D": _element("UI", study.study_uid),
        "00200010": _element("SH", study.study_id),
        "00201206": _element("IS", study.series_count),
        "00201208": _element("IS", study.instance_count),
        "00081190": _element("UR", f"{base}/studies/{study.study_uid}"),
    }
    data.update(extra or {})
    return dict(sorted(data.items()))


def series_json(series: Series, base: str, extra: dict | None = None) -> dict:
    study_uid = series.study.study_uid
    data = {
        "00080060": _element("CS", series.modality),
        "0008103E": _element("LO", series.description),
        "00180015": _element("CS", series.body_part),
        "0020000D": _element("UI", study_uid),
        "0020000E": _element("UI", series.series_uid),
        "00200011": _element("IS", series.number),
        "00201209": _element("IS", series.instance_count),
        "00081190": _element("UR", f"{base}/studies/{study_uid}/series/{series.series_uid}"),
    }
    data.update(extra or {})
    return dict(sorted(data.items()))


INSTANCE_TAGS = ("00080016", "00080018", "00200013", "00280008", "00280010", "00280011", "00280100")


def instance_json(
    instance: Instance, base: str, includes: set[str] | None = None, everything: bool = False
) -> dict:
    series, study = instance.series, instance.series.study
    attributes = bulk_urls(instance, base) if everything else instance.attributes
    wanted = set(INSTANCE_TAGS) | (includes or set())
    data = {tag: value for tag, value in attributes.items() if everything or tag in wanted}
    data.update(
        {
            "0020000D": _element("UI", study.study_uid),
            "0020000E": _element("UI", series.series_uid),
            "00080060": _element("CS", series.modality),
            "00081190": _element("UR", instance_url(instance, base)),
        }
    )
    return dict(sorted(data.items()))


def instance_url(instance: Instance, base: str) -> str:
    return (
        f"{base}/studies/{instance.series.study.study_uid}/series/{instance.series.series_uid}"
        f"/instances/{instance.sop_instance_uid}"
    )


def _sql_element(vr: str, value) -> Func:
    """`_element` in SQL: {"vr": vr, "Value": [value]}, or {"vr": vr} when the value is empty."""
    with_value = Func(
        Cast(Value("vr"), TextField()),
        Cast(Value(vr), TextField()),
        Cast(Value("Value"), TextField()),
        Func(value, function="jsonb_build_array"),
        function="jsonb_build_object",
    )
    bare = Func(Cast(Value("vr"), TextField()), Cast(Value(vr), TextField()), function="jsonb_build_object")
    return Case(When(Q(**{f"{value.name}__gt": ""}), then=with_value), default=bare, output_field=JSONField())


def metadata_documents(instances: QuerySet, base: str) -> list[str]:
    """WADO-RS metadata of `instances`, each as DICOM JSON text: the stored attributes with the
    index's UIDs, modality and retrieve URL merged in by PostgreSQL (jsonb ||, keys kept sorted)
    and bulk references made URLs of this service – no JSON parsed or written in Python, which
    for a series of a thousand instances was most of the answer's time."""
    retrieve = Concat(
        Value(f"{base}/studies/"),
        F("series__study__study_uid"),
        Value("/series/"),
        F("series__series_uid"),
        Value("/instances/"),
        F("sop_instance_uid"),
        output_field=TextField(),
    )
    merged = Func(
        Cast(Value("0020000D"), TextField()),
        _sql_element("UI", F("series__study__study_uid")),
        Cast(Value("0020000E"), TextField()),
        _sql_element("UI", F("series__series_uid")),
        Cast(Value("00080060"), TextField()),
        _sql_element("CS", F("series__modality")),
        Cast(Value("00081190"), TextField()),
        Func(
            Cast(Value("vr"), TextField()),
            Cast(Value("UR"), TextField()),
            Cast(Value("Value"), TextField()),
            Func(retrieve, function="jsonb_build_array"),
            function="jsonb_build_object",
        ),
        function="jsonb_build_object",
    )
    document = Func(F("attributes"), merged, template="(%(expressions)s)::text", arg_joiner=" || ")
    rows = instances.annotate(
        document=ExpressionWrapper(document, output_field=TextField()), retrieve=retrieve
    ).values_list("document", "retrieve")
    marker = '"BulkDataURI": "bulk:'
    return [text.replace(marker, f'"BulkDataURI": "{url}/bulkdata/') for text, url in rows]


def bulk_urls(instance: Instance, base: str) -> dict:
    """The instance's attributes with each bulk reference made a URL of this DICOMweb service."""
    url = instance_url(instance, base)

    def fix(node):
        if isinstance(node, dict):
            uri = node.get("BulkDataURI")
            if isinstance(uri, str) and uri.startswith("bulk:"):
                tag = uri[5:]
                node = {**node, "BulkDataURI": f"{url}/bulkdata/{tag}"}
            return {k: fix(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return fix(instance.attributes)


def includes_of(params) -> tuple[set[str], bool]:
    """The tags `includefield` asks for, and whether it asks for all."""
    tags, everything = set(), False
    for value in params.getlist("includefield"):
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if part.lower() == "all":
                everything = True
                continue
            keyword = keyword_of(part)
            if keyword is None:
                raise QueryError(f"includefield {part!r} is neither a DICOM keyword nor a tag.")
            tags.add(tag_of(keyword))
    return tags, everything
