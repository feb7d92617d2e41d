"""Pages: the slide list (filters, thumbnails, live states), adding slides, and the viewer.

The pages are shells around the slides API: the list and viewer read it and listen on the jobs
websocket for conversion progress; adding uploads through `POST /api/v1/slides/`.
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
from pathology.models import Slide, SlideState
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
        config = {
            "slide": slide.pk,
            "state": slide.state,
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
            },
        )


app_name = "pathology"

urlpatterns = [
    path("slides/", SlideListView.as_view(), name="slide-list"),
    path("slides/add/", SlideAddView.as_view(), name="slide-add"),
    path("slides/<int:pk>/", SlideDetailView.as_view(), name="slide-detail"),
]
