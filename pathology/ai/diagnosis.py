"""Patient-level diagnosis from patch predictions, and its evaluation against the metadata.

All tissue patches of all slides of a patient that a model version classified (finished
inferences) are combined two ways: the majority vote of the patches' most likely classes, and
the class of the highest mean probability; the vote is the patient's AI diagnosis. The
pathologist's diagnosis is the metadata property the model was trained on (default
`diagnosis`, on the patient or a sample above the slide). `evaluate` gives the per-patient table
(with the per-stain breakdown), the confusion matrix, per-class precision and recall and the
accuracy; `write_back` appends the AI diagnoses to the patients' metadata as events.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from pathology.ai import AIError
from pathology.models import Inference, InferenceState, ModelVersion


def patient_table(version: ModelVersion, label: str = "diagnosis") -> list[dict]:
    """One row per patient with finished inferences of `version`."""
    from pathology.ai.inference import results
    from pathology.services.facts import slide_facts

    inferences = list(
        Inference.objects.filter(model_version=version, state=InferenceState.DONE).select_related("slide")
    )
    latest: dict[int, Inference] = {}
    for inference in sorted(inferences, key=lambda i: i.pk):
        latest[inference.slide_id] = inference  # the newest run per slide
    facts = slide_facts([i.slide for i in latest.values()], keys=(label, "stain"), with_patient=True)
    classes = version.classes
    votes: dict[object, np.ndarray] = defaultdict(lambda: np.zeros(len(classes), dtype=np.int64))
    sums: dict[object, np.ndarray] = defaultdict(lambda: np.zeros(len(classes), dtype=np.float64))
    stains: dict[object, dict[str, np.ndarray]] = defaultdict(dict)
    truth: dict[object, object] = {}
    slides: dict[object, list[int]] = defaultdict(list)
    jobs: dict[object, list[int]] = defaultdict(list)
    for slide_id, inference in latest.items():
        fact = facts.get(slide_id)
        if not fact:
            continue  # a slide linked to no patient: no patient diagnosis
        patient = fact["patient"]
        found = results(inference)
        tissue = found["tissue"]
        probabilities = found["probabilities"].astype(np.float64)[tissue]
        if not len(probabilities):
            continue  # no tissue patch: nothing to vote with
        winners = np.bincount(probabilities.argmax(axis=1), minlength=len(classes))
        votes[patient] += winners
        sums[patient] += probabilities.sum(axis=0)
        stain = str(fact.get("stain") or "unknown")
        stains[patient][stain] = stains[patient].get(stain, 0) + winners
        if fact.get(label) not in (None, ""):
            truth[patient] = str(fact[label])
        slides[patient].append(slide_id)
        if inference.job_id:
            jobs[patient].append(inference.job_id)
    rows = []
    for patient, counted in votes.items():
        total = int(counted.sum())
        if total == 0:
            continue
        rows.append(
            {
                "patient": patient,
                "slides": sorted(slides[patient]),
                "jobs": sorted(jobs[patient]),
                "patches": total,
                "vote": classes[int(counted.argmax())],
                "mean_probability": classes[int(sums[patient].argmax())],
                "probabilities": {c: float(sums[patient][i] / total) for i, c in enumerate(classes)},
                "by_stain": {
                    stain: classes[int(np.asarray(v).argmax())]
                    for stain, v in sorted(stains[patient].items())
                },
                "pathologist": truth.get(patient),
            }
        )
    return sorted(rows, key=lambda r: r["patient"])


def evaluate(version: ModelVersion, label: str = "diagnosis") -> dict:
    rows = patient_table(version, label)
    classes = version.classes
    known = [r for r in rows if r["pathologist"] in classes]
    matrix = np.zeros((len(classes), len(classes)), dtype=int)  # rows: pathologist, columns: AI
    for row in known:
        matrix[classes.index(row["pathologist"]), classes.index(row["vote"])] += 1
    per_class = {}
    for i, name in enumerate(classes):
        predicted, actual = int(matrix[:, i].sum()), int(matrix[i, :].sum())
        per_class[name] = {
            "precision": float(matrix[i, i] / predicted) if predicted else None,
            "recall": float(matrix[i, i] / actual) if actual else None,
            "patients": actual,
        }
    return {
        "classes": classes,
        "patients": rows,
        "confusion": matrix.tolist(),
        "per_class": per_class,
        "accuracy": float(np.trace(matrix) / len(known)) if known else None,
        "compared": len(known),
        "misclassified_slides": sorted(
            s for r in known if r["vote"] != r["pathologist"] for s in r["slides"]
        ),
    }


def write_back(version: ModelVersion, user, column: str = "ai_diagnosis") -> int:
    """Append each patient's AI diagnosis (the vote) to the patient's `column` as an event
    authored by `user`, whose comment names the model version and the inference jobs the vote
    comes from (one batch per patient, all or none); returns how many patients were written."""
    from django.db import transaction

    from metadata.services.events import EventError, append_events

    rows = patient_table(version)
    if not rows:
        return 0
    try:
        with transaction.atomic():
            for row in rows:
                jobs = ", ".join(f"#{j}" for j in row["jobs"])
                append_events(
                    version.project,
                    [{"entity": row["patient"], "property": column, "value": row["vote"]}],
                    author=user,
                    comment=(
                        f"AI diagnosis by {version.name} v{version.version} (model version {version.pk})"
                        + (f" from inference jobs {jobs}" if jobs else "")
                    ),
                )
    except EventError as exc:
        raise AIError(
            f"The AI diagnoses could not be written to “{column}”: {exc} "
            f"{' '.join(m for messages in exc.errors.values() for m in messages)}".strip()
            + f" Add a “{column}” column (text) to the patient rows first.",
            "no_column",
        ) from None
    return len(rows)


def csv_text(report: dict) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    classes = report["classes"]
    writer.writerow(
        [
            "patient",
            "slides",
            "patches",
            "ai_vote",
            "ai_mean_probability",
            "pathologist",
            *[f"p_{c}" for c in classes],
            "by_stain",
        ]
    )
    for row in report["patients"]:
        writer.writerow(
            [
                row["patient"],
                " ".join(map(str, row["slides"])),
                row["patches"],
                row["vote"],
                row["mean_probability"],
                row["pathologist"] or "",
                *[f"{row['probabilities'][c]:.4f}" for c in classes],
                "; ".join(f"{s}: {v}" for s, v in row["by_stain"].items()),
            ]
        )
    return out.getvalue()
