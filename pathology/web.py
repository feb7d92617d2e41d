"""Pages: the slide list (filters, thumbnails, live states), adding slides, the viewer (with the
AI diagnosis maps), and the AI models: their list (upload, training) and each version's page
(applying it, its inferences, the patient-level evaluation).

The pages are shells around the API: the list and viewer read it and listen on the jobs
websocket for conversion progress; adding uploads through `POST /api/v1/slides/`; the model
pages post to `/api/v1/models/` and `/api/v1/inferences/`.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404
from django.shortcuts import render
from django.urls import path
from django.views import View

from metadata.models import Entity, ProjectRole
from metadata.querysets import has_project_role, projects_of
from metadata.services.entities import linkable_entities
from pathology.models import Inference, InferenceState, ModelKind, ModelVersion, Slide, SlideState
from pathology.services import slides as slide_service
from pathology.services.facts import slide_facts

PAGE_SIZE = 50


class SlideListView(LoginRequiredMixin, View):
    def get(self, request):
        params = request.GET
        slides = Slide.objects.for_user(request.user, "view").select_related("pyramid", "project", "sample")
        project = params.get("project", "")
        if project.isdigit():
            slides = slides.filter(project_id=int(project))
        state = params.get("state", "")
        if state in SlideState.values:
            slides = slides.filter(state=state)
        query = params.get("q", "").strip()[:200]
        if query:
            slides = slides.filter(Q(name__icontains=query) | Q(file_name__icontains=query))
        sample = params.get("sample", "").strip()[:30]
        if sample:
            slides = slides.filter(sample__mnemonic__iexact=sample)
        slides = list(slides[:5000])
        facts = slide_facts(slides)
        stain, diagnosis = params.get("stain", "").strip(), params.get("diagnosis", "").strip()
        if stain:
            slides = [s for s in slides if str(facts.get(s.pk, {}).get("stain", "")).lower() == stain.lower()]
        if diagnosis:
            wanted = diagnosis.lower()
            slides = [s for s in slides if wanted in str(facts.get(s.pk, {}).get("diagnosis", "")).lower()]
        page = Paginator(slides, PAGE_SIZE).get_page(params.get("page"))
        stains = sorted({str(f["stain"]) for f in facts.values() if f.get("stain")})
        return render(
            request,
            "pathology/slide_list.html",
            {
                "page": page,
                "rows": [{"slide": s, "facts": facts.get(s.pk, {})} for s in page.object_list],
                "projects": projects_of(request.user),
                "can_add": projects_of(request.user, [ProjectRole.WRITER, ProjectRole.ADMIN]).exists(),
                "states": SlideState.choices,
                "stains": stains,
                "filters": {
                    k: params.get(k, "") for k in ("project", "state", "q", "sample", "stain", "diagnosis")
                },
                "filtered": any(
                    params.get(k) for k in ("project", "state", "q", "sample", "stain", "diagnosis")
                ),
                "total": len(slides),
            },
        )


class SlideAddView(LoginRequiredMixin, View):
    def get(self, request):
        projects = projects_of(request.user, [ProjectRole.WRITER, ProjectRole.ADMIN])
        selected = request.GET.get("project", "")
        return render(
            request,
            "pathology/slide_add.html",
            {
                "projects": projects,
                "selected": int(selected) if selected.isdigit() else None,
                "ingress_dir": settings.PORTAL_INGRESS_DIR,
                "max_size": settings.PATHOLOGY_MAX_SLIDE_SIZE,
            },
        )


def case_neighbours(slide: Slide, user) -> tuple[Slide | None, Slide | None, str]:
    """The previous and next slide of the same case (the linked sample's top ancestor, e.g. the
    patient), in name order, and the case's mnemonic."""
    if not slide.sample_id:
        return None, None, ""
    parents = dict(Entity.objects.filter(project_id=slide.project_id).values_list("id", "parent_id"))
    mnemonic = dict(Entity.objects.filter(pk=slide.sample_id).values_list("id", "mnemonic"))

    def root(entity_id):
        seen = 0
        while parents.get(entity_id) is not None and seen < 10:
            entity_id, seen = parents[entity_id], seen + 1
        return entity_id

    case = root(slide.sample_id)
    siblings = [
        s
        for s in Slide.objects.for_user(user, "view")
        .filter(project_id=slide.project_id, sample__isnull=False)
        .order_by("name", "pk")
        .only("id", "name", "sample_id")
        if root(s.sample_id) == case
    ]
    index = next(i for i, s in enumerate(siblings) if s.pk == slide.pk)
    case_name = Entity.objects.filter(pk=case).values_list("mnemonic", flat=True).first() or mnemonic.get(
        slide.sample_id, ""
    )
    return (
        siblings[index - 1] if index > 0 else None,
        siblings[index + 1] if index + 1 < len(siblings) else None,
        case_name,
    )


class SlideDetailView(LoginRequiredMixin, View):
    def get(self, request, pk: int):
        slide = (
            Slide.objects.for_user(request.user, "view")
            .select_related("pyramid", "project", "sample", "created_by", "duplicate_of")
            .filter(pk=pk)
            .first()
        )
        if slide is None:
            raise Http404("No such slide, or you have no access to it.")
        slide_service.is_busy(slide)  # a conversion whose worker vanished shows as failed
        previous, following, case = case_neighbours(slide, request.user)
        pyramid = slide.pyramid
        can_write = has_project_role(request.user, slide.project, "writer")
        samples = linkable_entities(slide.project) if can_write else []
        versions = (
            list(
                ModelVersion.objects.filter(project=slide.project, kind=ModelKind.CLASSIFIER).order_by(
                    "name", "-version"
                )
            )
            if can_write and pyramid
            else []
        )
        wanted = request.GET.get("inference", "")
        config = {
            "slide": slide.pk,
            "state": slide.state,
            "levels": pyramid.levels if pyramid else None,
            "tileSize": pyramid.tile_size if pyramid else None,
            "inference": int(wanted) if wanted.isdigit() else None,
            "dzi": f"/api/v1/slides/{slide.pk}/deepzoom.dzi" if pyramid else None,
            "api": f"/api/v1/slides/{slide.pk}/",
            "mpp": pyramid.mpp_x if pyramid else None,
            "objective": pyramid.objective_power if pyramid else None,
            "width": pyramid.width if pyramid else None,
            "height": pyramid.height if pyramid else None,
            "canWrite": can_write,
            "osdImages": settings.STATIC_URL + "vendor/openseadragon/images/",
        }
        return render(
            request,
            "pathology/slide_detail.html",
            {
                "slide": slide,
                "pyramid": pyramid,
                "facts": slide_facts([slide]).get(slide.pk, {}),
                "previous": previous,
                "next": following,
                "case": case,
                "can_write": can_write,
                "samples": samples,
                "config": config,
                "properties": sorted((pyramid.properties or {}).items())[:400] if pyramid else [],
                "images": [n for n in (pyramid.images if pyramid else []) if n != "thumbnail"],
                "model_versions": versions,
            },
        )


class ModelListView(LoginRequiredMixin, View):
    """The model versions of the user's projects, with forms to upload a TorchScript model and to
    train one on a project's labelled slides (both post to the API)."""

    def get(self, request):
        from pathology.ai import ARCHITECTURES
        from pathology.ai.train_job import DEFAULTS

        versions = (
            ModelVersion.objects.for_user(request.user, "view")
            .select_related("project", "created_by")
            .order_by("project__name", "name", "-version")
        )
        project = request.GET.get("project", "")
        if project.isdigit():
            versions = versions.filter(project_id=int(project))
        writable = list(projects_of(request.user, [ProjectRole.WRITER, ProjectRole.ADMIN]))
        return render(
            request,
            "pathology/model_list.html",
            {
                "versions": versions[:1000],
                "projects": projects_of(request.user),
                "writable": writable,
                "selected": int(project) if project.isdigit() else None,
                "architectures": ARCHITECTURES,
                "defaults": DEFAULTS,
                "bases": [
                    v for v in ModelVersion.objects.filter(project__in=writable).order_by("name", "-version")
                ],
            },
        )


def _bars(per_class: dict) -> list[dict]:
    """Per-class precision and recall as percentages, with the geometry of the page's bar chart
    (180 units for 100 %; None: no patient to divide by)."""
    rows = []
    for index, (name, found) in enumerate(per_class.items()):
        row = {"name": name, "patients": found["patients"], "y": 30 * index}
        for key in ("precision", "recall"):
            value = None if found[key] is None else round(100 * found[key], 1)
            width = 0 if value is None else round(1.8 * value, 1)
            row.update({key: value, f"{key}_width": width, f"{key}_end": 114 + width})
        rows.append(row)
    return rows


class ModelDetailView(LoginRequiredMixin, View):
    """One model version: what it is (description, metrics, provenance), applying it to slides,
    its inferences, and the evaluation of its patient diagnoses against the pathologist's."""

    def get(self, request, pk: int):
        from pathology.ai import diagnosis
        from pathology.ai.inference import colours

        version = (
            ModelVersion.objects.for_user(request.user, "view")
            .select_related("project", "created_by")
            .filter(pk=pk)
            .first()
        )
        if version is None:
            raise Http404("No such model version, or you have no access to it.")
        can_write = has_project_role(request.user, version.project, "writer")
        inferences = list(
            Inference.objects.filter(model_version=version)
            .select_related("slide", "job")
            .order_by("-pk")[:2000]
        )
        trained_on = (version.provenance or {}).get("label")
        label = request.GET.get("label", "").strip()[:100] or (
            trained_on if isinstance(trained_on, str) and trained_on else "diagnosis"
        )
        backbone = version.kind == ModelKind.BACKBONE
        report = (
            {
                "classes": [],
                "patients": [],
                "confusion": [],
                "per_class": {},
                "accuracy": None,
                "compared": 0,
                "misclassified_slides": [],
            }
            if backbone
            else diagnosis.evaluate(version, label)
        )
        latest = {}
        for inference in sorted(inferences, key=lambda i: i.pk):
            if inference.state == InferenceState.DONE:
                latest[inference.slide_id] = inference
        verdicts = {s: (r["vote"], r["pathologist"]) for r in report["patients"] for s in r["slides"]}
        gallery = [
            {
                "slide": latest[s].slide,
                "inference": latest[s],
                "ai": verdicts[s][0],
                "pathologist": verdicts[s][1],
            }
            for s in report["misclassified_slides"]
            if s in latest
        ]
        confusion = report["confusion"]
        most = max((max(row) for row in confusion), default=0) or 1
        slides = (
            list(
                Slide.objects.filter(project=version.project, state=SlideState.READY)
                .select_related("pyramid", "sample")
                .order_by("name", "pk")[:500]
            )
            if can_write and not backbone
            else []
        )
        palette = colours(version.classes)
        history = (version.metrics or {}).get("history") or []
        job_id = (version.provenance or {}).get("job")
        return render(
            request,
            "pathology/model_detail.html",
            {
                "version": version,
                "backbone": backbone,
                "can_write": can_write,
                "inferences": inferences,
                "report": report,
                "label": label,
                "matrix": [
                    {
                        "name": name,
                        "cells": [
                            {"count": n, "share": round(n / most, 3), "right": i == j}
                            for j, n in enumerate(confusion[i])
                        ],
                    }
                    for i, name in enumerate(version.classes)
                ],
                "bars": _bars(report["per_class"]),
                "bars_height": 30 * len(version.classes),
                "accuracy": None if report["accuracy"] is None else round(100 * report["accuracy"], 1),
                "gallery": gallery,
                "slides": slides,
                "legend": [{"name": c, "colour": palette[c]} for c in version.classes],
                "history": history,
                "scalar_metrics": [
                    (k, v) for k, v in sorted((version.metrics or {}).items()) if isinstance(v, int | float)
                ],
                "training_job": job_id if isinstance(job_id, int) else None,
                "config": {
                    "version": version.pk,
                    "project": version.project_id,
                    "evaluation": f"/api/v1/models/{version.pk}/evaluation/",
                },
            },
        )


app_name = "pathology"

urlpatterns = [
    path("slides/", SlideListView.as_view(), name="slide-list"),
    path("slides/add/", SlideAddView.as_view(), name="slide-add"),
    path("slides/<int:pk>/", SlideDetailView.as_view(), name="slide-detail"),
    path("models/", ModelListView.as_view(), name="model-list"),
    path("models/<int:pk>/", ModelDetailView.as_view(), name="model-detail"),
]
