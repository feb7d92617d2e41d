"""The property catalogue and templates the portal ships: sequencing submissions (modelled on the
EGA and GHGA sample and experiment fields), histopathology, and radiology imaging (DICOM).

`ship_templates` creates or updates them by key; migration 0003 calls it with the historical
models, tests and `manage.py ship_templates` with the current ones.
"""

from __future__ import annotations


def options(*values):
    """Option dicts from plain values or (value, description) pairs."""
    return [{"value": v[0], "description": v[1]} if isinstance(v, tuple) else {"value": v} for v in values]


# key: (label, type, description, extra)
PROPERTIES = {
    "sex": (
        "Sex",
        "choice",
        "Biological sex of the individual.",
        {"options": options("female", "male", "other", "unknown"), "examples": ["female"]},
    ),
    "phenotype": (
        "Phenotype",
        "text",
        "Observed phenotype or condition, preferably an HPO term.",
        {"examples": ["HP:0030358 Non-small cell lung carcinoma"]},
    ),
    "age_at_sampling": (
        "Age at sampling",
        "integer",
        "Age of the individual when the sample was taken.",
        {"unit": "years", "min_value": 0, "max_value": 130, "examples": ["63"]},
    ),
    "ancestry": (
        "Ancestry",
        "text",
        "Self-reported or inferred ancestry of the individual.",
        {"examples": ["European"]},
    ),
    "species": (
        "Species",
        "choice",
        "Organism the sample comes from, as Latin binomial.",
        {
            "options": options(
                ("Homo sapiens", "human"),
                ("Mus musculus", "house mouse"),
                ("Rattus norvegicus", "brown rat"),
                ("Danio rerio", "zebrafish"),
                ("Sus scrofa", "pig"),
            ),
            "examples": ["Homo sapiens"],
        },
    ),
    "tissue": (
        "Tissue",
        "text",
        "Tissue or organ the sample was taken from, preferably an UBERON term.",
        {"examples": ["UBERON:0002048 lung", "liver"]},
    ),
    "biospecimen_type": (
        "Sample type",
        "choice",
        "What kind of material the sample is.",
        {
            "options": options(
                ("tumour", "tumour tissue"),
                ("normal", "matched normal tissue"),
                "blood",
                "saliva",
                "cell line",
                "organoid",
                "xenograft",
            ),
            "examples": ["tumour"],
        },
    ),
    "diagnosis": (
        "Diagnosis",
        "text",
        "Disease diagnosis, preferably with an ICD-10 or ICD-O code.",
        {"examples": ["C34.1 Malignant neoplasm of upper lobe, bronchus or lung"]},
    ),
    "case_control_status": (
        "Case or control",
        "choice",
        "Whether the individual is a case or a control.",
        {"options": options("case", "control", "unknown"), "examples": ["case"]},
    ),
    "collection_date": (
        "Collection date",
        "date",
        "Date the sample was collected.",
        {"examples": ["2025-03-14"]},
    ),
    "storage": (
        "Storage",
        "choice",
        "How the sample was preserved.",
        {
            "options": options(
                ("FFPE", "formalin-fixed, paraffin-embedded"),
                "fresh frozen",
                "fresh",
                "RNAlater",
                "cryopreserved cells",
            ),
            "examples": ["FFPE"],
        },
    ),
    "dataset": ("Dataset", "dataset", "The portal dataset holding this row's files.", {"examples": ["12"]}),
    "library_strategy": (
        "Library strategy",
        "choice",
        "Sequencing technique intended for the library.",
        {
            "options": options(
                ("WGS", "whole genome sequencing"),
                ("WXS", "whole exome sequencing"),
                "RNA-Seq",
                "scRNA-Seq",
                "miRNA-Seq",
                "ChIP-Seq",
                "ATAC-seq",
                "Bisulfite-Seq",
                "Targeted-Capture",
                "AMPLICON",
                "Hi-C",
            ),
            "examples": ["WGS"],
        },
    ),
    "library_source": (
        "Library source",
        "choice",
        "Type of source material sequenced.",
        {
            "options": options(
                "GENOMIC", "TRANSCRIPTOMIC", "TRANSCRIPTOMIC SINGLE CELL", "METAGENOMIC", "VIRAL RNA", "OTHER"
            ),
            "examples": ["GENOMIC"],
        },
    ),
    "library_selection": (
        "Library selection",
        "choice",
        "How the material was selected or enriched.",
        {
            "options": options(
                "RANDOM", "PCR", "Hybrid Selection", "PolyA", "cDNA", "Reduced Representation", "unspecified"
            ),
            "examples": ["RANDOM"],
        },
    ),
    "library_layout": (
        "Library layout",
        "choice",
        "Single-end or paired-end reads.",
        {"options": options("SINGLE", "PAIRED"), "examples": ["PAIRED"]},
    ),
    "instrument_platform": (
        "Instrument platform",
        "choice",
        "Sequencing platform.",
        {
            "options": options(
                "ILLUMINA", "OXFORD_NANOPORE", "PACBIO_SMRT", "ION_TORRENT", "ELEMENT", "ULTIMA"
            ),
            "examples": ["ILLUMINA"],
        },
    ),
    "instrument_model": (
        "Instrument model",
        "choice",
        "Sequencer model.",
        {
            "options": options(
                "Illumina NovaSeq 6000",
                "Illumina NovaSeq X",
                "Illumina NextSeq 2000",
                "Illumina MiSeq",
                "PromethION",
                "MinION",
                "PacBio Sequel II",
                "PacBio Revio",
            ),
            "examples": ["Illumina NovaSeq 6000"],
        },
    ),
    "read_length": (
        "Read length",
        "integer",
        "Length of each read.",
        {"unit": "bp", "min_value": 1, "examples": ["150"]},
    ),
    "target_coverage": (
        "Target coverage",
        "integer",
        "Mean sequencing depth aimed for.",
        {"unit": "x", "min_value": 1, "examples": ["30"]},
    ),
    "insert_size": (
        "Insert size",
        "integer",
        "Mean fragment length between adapters.",
        {"unit": "bp", "min_value": 1, "examples": ["350"]},
    ),
    "library_kit": (
        "Library preparation kit",
        "text",
        "Kit used to prepare the library.",
        {"examples": ["Illumina DNA PCR-Free Prep"]},
    ),
    "block_id": (
        "Block",
        "text",
        "Identifier of the tissue block, as written on it.",
        {"regex": r"[A-Za-z0-9][A-Za-z0-9./-]*", "examples": ["H-2025-01234/A2"]},
    ),
    "fixation": (
        "Fixation",
        "choice",
        "How the tissue was fixed.",
        {"options": options("FFPE", "frozen", "other"), "examples": ["FFPE"]},
    ),
    "stain": (
        "Stain",
        "choice",
        "Staining of the slide.",
        {
            "options": options(
                ("H&E", "haematoxylin and eosin"),
                ("IHC", "immunohistochemistry"),
                ("PAS", "periodic acid-Schiff"),
                "Giemsa",
                "Masson trichrome",
                "ISH",
            ),
            "examples": ["H&E"],
        },
    ),
    "ihc_marker": (
        "IHC marker",
        "text",
        "Antibody target of an immunohistochemistry stain.",
        {"examples": ["Ki-67", "HER2", "PD-L1"]},
    ),
    "tumour_grade": (
        "Tumour grade",
        "choice",
        "Histological grade.",
        {"options": options("G1", "G2", "G3", "G4", "GX"), "examples": ["G2"]},
    ),
    "scanner": (
        "Scanner",
        "choice",
        "Slide scanner used.",
        {
            "options": options(
                "Leica Aperio GT 450",
                "Leica Aperio AT2",
                "Hamamatsu NanoZoomer S360",
                "3DHISTECH Pannoramic 1000",
                "Philips IntelliSite Ultra Fast Scanner",
                "Roche VENTANA DP 200",
            ),
            "examples": ["Leica Aperio GT 450"],
        },
    ),
    "magnification": (
        "Scan magnification",
        "choice",
        "Objective magnification of the scan.",
        {"options": options("20x", "40x"), "examples": ["40x"]},
    ),
    "slide": ("Slide", "slide", "The whole-slide image in the portal.", {"examples": ["7"]}),
    "modality": (
        "Modality",
        "choice",
        "Imaging modality (DICOM code).",
        {
            "options": options(
                ("CT", "computed tomography"),
                ("MR", "magnetic resonance"),
                ("PT", "positron emission tomography"),
                ("US", "ultrasound"),
                ("CR", "computed radiography"),
                ("DX", "digital radiography"),
                ("MG", "mammography"),
                ("NM", "nuclear medicine"),
            ),
            "examples": ["CT"],
        },
    ),
    "body_part": (
        "Body part examined",
        "choice",
        "Body part examined (DICOM body part value).",
        {
            "options": options(
                "HEAD", "NECK", "CHEST", "ABDOMEN", "PELVIS", "BREAST", "SPINE", "EXTREMITY", "WHOLEBODY"
            ),
            "examples": ["CHEST"],
        },
    ),
    "protocol": ("Protocol", "text", "Acquisition protocol name.", {"examples": ["Thorax low-dose"]}),
    "contrast_agent": (
        "Contrast agent",
        "boolean",
        "Whether a contrast agent was given.",
        {"examples": ["yes"]},
    ),
    "study_date": ("Study date", "date", "Date of the imaging study.", {"examples": ["2025-06-02"]}),
    "slice_thickness": (
        "Slice thickness",
        "decimal",
        "Nominal slice thickness.",
        {"unit": "mm", "min_value": 0.01, "examples": ["1.25"]},
    ),
    "study": ("DICOM study", "study", "The DICOM study in the portal.", {"examples": ["3"]}),
}

TEMPLATES = {
    "sequencing": {
        "name": "Sequencing submission (EGA/GHGA)",
        "description": "Individuals, samples and libraries with the fields EGA and GHGA submissions ask for.",
        "kinds": [
            {"key": "individual", "label": "Individual", "prefix": "I"},
            {"key": "sample", "label": "Sample", "prefix": "S", "parent": "individual"},
            {"key": "library", "label": "Library", "prefix": "L", "parent": "sample"},
        ],
        "columns": [
            ("individual", ["sex", "phenotype", "age_at_sampling", "ancestry", "case_control_status"]),
            (
                "sample",
                [
                    "species",
                    "tissue",
                    "biospecimen_type",
                    "diagnosis",
                    "collection_date",
                    "storage",
                    "dataset",
                ],
            ),
            (
                "library",
                [
                    "library_strategy",
                    "library_source",
                    "library_selection",
                    "library_layout",
                    "instrument_platform",
                    "instrument_model",
                    "read_length",
                    "target_coverage",
                    "insert_size",
                    "library_kit",
                ],
            ),
        ],
        "required": {"sex", "species", "tissue", "library_strategy", "instrument_platform"},
    },
    "pathology": {
        "name": "Histopathology",
        "description": "Patients, tissue blocks and stained slides with their scans.",
        "kinds": [
            {"key": "patient", "label": "Patient", "prefix": "P"},
            {"key": "block", "label": "Block", "prefix": "B", "parent": "patient"},
            {"key": "slide", "label": "Slide", "prefix": "SL", "parent": "block"},
        ],
        "columns": [
            ("patient", ["sex", "age_at_sampling", "diagnosis"]),
            ("block", ["block_id", "tissue", "fixation", "tumour_grade", "collection_date"]),
            ("slide", ["stain", "ihc_marker", "scanner", "magnification", "slide"]),
        ],
        "required": {"stain", "block_id"},
    },
    "imaging": {
        "name": "Radiology imaging (DICOM)",
        "description": "Patients and their imaging studies.",
        "kinds": [
            {"key": "patient", "label": "Patient", "prefix": "P"},
            {"key": "study", "label": "Study", "prefix": "ST", "parent": "patient"},
        ],
        "columns": [
            ("patient", ["sex", "age_at_sampling", "diagnosis"]),
            (
                "study",
                [
                    "modality",
                    "body_part",
                    "protocol",
                    "contrast_agent",
                    "study_date",
                    "slice_thickness",
                    "study",
                ],
            ),
        ],
        "required": {"modality"},
    },
}


def ship_templates(Property, Template, TemplateProperty) -> None:  # noqa: N803 - model classes
    """Create or update the shipped properties and templates (admins' own rows stay as they are)."""
    properties = {}
    for key, (label, kind, description, extra) in PROPERTIES.items():
        properties[key], _ = Property.objects.update_or_create(
            key=key,
            defaults={
                "label": label,
                "type": kind,
                "description": description,
                "options_only": False,
                **extra,
            },
        )
    for key, spec in TEMPLATES.items():
        template, _ = Template.objects.update_or_create(
            key=key,
            defaults={
                "name": spec["name"],
                "description": spec["description"],
                "entity_kinds": spec["kinds"],
            },
        )
        position = 0
        for kind, keys in spec["columns"]:
            for prop in keys:
                TemplateProperty.objects.update_or_create(
                    template=template,
                    property=properties[prop],
                    entity_kind=kind,
                    defaults={"position": position, "required": prop in spec["required"]},
                )
                position += 1
