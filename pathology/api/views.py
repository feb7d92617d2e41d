"""The slides API: slides (add by upload, list, change, delete, convert again), Deep Zoom and
pyramid tiles, regions, associated images and annotations (GeoJSON).

Access follows the slide's project: members see, writers add and change. A slide outside the
user's projects is 404 everywhere, tiles and regions included.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.db.models import Q
from django.http import HttpResponse
from django.utils.cache import patch_cache_control
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from metadata.querysets import has_project_role
from pathology.ai import AIError, registry, train_job
from pathology.ai import diagnosis as ai_diagnosis
from pathology.ai import inference as ai_inference
from pathology.api import serializers as s
from pathology.models import Inference, ModelVersion, Slide, SlideState
from pathology.pyramid import PyramidError
from pathology.services import annotations as notes
from pathology.services import slides as slide_service
from pathology.services import tiles
from portal.api.base import PortalViewSetMixin
from portal.api.serializers import JobSerializer
from storage.services.errors import StorageError


def filter_by_ids(found, params, names: tuple[str, ...]):
    """`found` narrowed to the ids given in the query parameters `names` (`<name>_id`)."""
    for name in names:
        value = params.get(name)
        if value:
            if not value.isdigit():
                raise exceptions.ValidationError({name: ["A number."]})
            found = found.filter(**{f"{name}_id": int(value)})
    return found


class SlideErrorsMixin:
    def handle_exception(self, exc):
        if isinstance(exc, slide_service.SlideError):
            return Response({"detail": str(exc), "code": exc.code}, status=exc.status)
        if isinstance(exc, notes.AnnotationError):
            return Response({"detail": str(exc), "code": "invalid_geojson"}, status=400)
        return super().handle_exception(exc)


class SlideViewSet(
    SlideErrorsMixin,
    PortalViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Slides of your projects. POST (multipart: `file`, `project`, optional `name`, `options`)
    adds one and starts its conversion; `convert/` converts again (e.g. with other filters)."""

    queryset = Slide.objects.select_related("pyramid", "project")
    serializer_class = s.SlideSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    action_permissions = {"convert": "change", "annotations": "view"}

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return s.SlideUpdateSerializer
        return super().get_serializer_class()

    @extend_schema(
        parameters=[
            OpenApiParameter("project", int),
            OpenApiParameter("state", str, enum=SlideState.values),
            OpenApiParameter("sample", int),
            OpenApiParameter("q", str, description="Part of the name or file name."),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        found = super().get_queryset()
        if self.action == "list":
            params = self.request.query_params
            found = filter_by_ids(found, params, ("project", "sample"))
            state = params.get("state")
            if state:
                if state not in SlideState.values:
                    raise exceptions.ValidationError({"state": [f"One of {', '.join(SlideState.values)}."]})
                found = found.filter(state=state)
            if params.get("q"):
                found = found.filter(Q(name__icontains=params["q"]) | Q(file_name__icontains=params["q"]))
        return found

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        project = data["project"]
        if not has_project_role(request.user, project, "writer"):
            raise exceptions.PermissionDenied("Adding slides needs the writer role in the project.")
        if "upload" in data:
            slide = self._from_upload(request, project, data)
        elif "dataset" in data:
            slide = self._from_dataset(request, project, data)
        else:
            slide = self._from_file(request, project, data)
        if data.get("sample") is not None:
            Slide.objects.filter(pk=slide.pk).update(sample=data["sample"])
            slide.refresh_from_db()
        return Response(self.get_serializer(slide).data, status=status.HTTP_201_CREATED)

    def _from_file(self, request, project, data) -> Slide:
        upload = data["file"]
        if upload.size == 0:
            raise slide_service.SlideError("The file is empty (0 bytes).")
        with tempfile.NamedTemporaryFile(delete=False, suffix=".upload") as handle:
            for part in upload.chunks():
                handle.write(part)
        try:
            return slide_service.add_slide(
                project=project,
                user=request.user,
                source=Path(handle.name),
                file_name=upload.name,
                name=data.get("name", ""),
                options=data.get("options"),
                ingress="upload",
            )
        finally:
            Path(handle.name).unlink(missing_ok=True)

    def _from_upload(self, request, project, data) -> Slide:
        try:
            return slide_service.add_slide_from_upload(
                project=project,
                user=request.user,
                upload=data["upload"],
                name=data.get("name", ""),
                options=data.get("options"),
            )
        except StorageError as exc:
            raise slide_service.SlideError(exc.message, exc.status, exc.code) from None

    def _from_dataset(self, request, project, data) -> Slide:
        from storage.models import Dataset
        from storage.services.access import decode_key

        dataset = Dataset.objects.for_user(request.user, "view").filter(mnemonic=data["dataset"]).first()
        if dataset is None:
            raise exceptions.NotFound("No such dataset, or you have no access to it.")
        try:
            return slide_service.add_slide_from_dataset(
                project=project,
                user=request.user,
                dataset=dataset,
                key=decode_key(data["key"]),
                name=data.get("name", ""),
                options=data.get("options"),
            )
        except StorageError as exc:
            raise slide_service.SlideError(exc.message, exc.status, exc.code) from None

    def perform_destroy(self, instance):
        if slide_service.is_busy(instance):
            raise slide_service.SlideError(
                "The slide is being converted; delete it once that is done.", 409, "busy"
            )
        slide_service.delete_slide(instance, self.request.user)

    @extend_schema(request=s.ConvertSerializer, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def convert(self, request, pk=None):
        """Convert the slide again: after a failure, or with new filter settings."""
        slide = self.get_object()
        body = s.ConvertSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = slide_service.reconvert(slide, request.user, body.validated_data.get("options"))
        return Response(
            JobSerializer(job, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(request=s.AnnotationInputSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get", "post"])
    def annotations(self, request, pk=None):
        """GET: the slide's annotations as a GeoJSON FeatureCollection. POST: add a Feature or a
        FeatureCollection (writers)."""
        slide = self.get_object()
        if request.method == "POST":
            if not has_project_role(request.user, slide.project, "writer"):
                raise exceptions.PermissionDenied("Annotating needs the writer role in the project.")
            created = notes.import_geojson(slide, request.data, request.user)
            return Response(
                {"type": "FeatureCollection", "features": [notes.as_feature(a) for a in created]},
                status=status.HTTP_201_CREATED,
            )
        return Response(notes.export_geojson(slide))

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"annotations/(?P<annotation>\d+)")
    def delete_annotation(self, request, pk=None, annotation=None):
        slide = self.get_object()
        if not has_project_role(request.user, slide.project, "writer"):
            raise exceptions.PermissionDenied("Removing annotations needs the writer role in the project.")
        deleted, _ = slide.annotations.filter(pk=int(annotation)).delete()
        if not deleted:
            raise exceptions.NotFound("No such annotation on this slide.")
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- pixels ---------------------------------------------------------------------------------------


def _pyramid_of(request, pk) -> tuple[Slide, object]:
    """The slide (one query, access checked) and its open pyramid; 404 when hidden, 409 when
    not converted yet."""
    slide = (
        Slide.objects.for_user(request.user, "view")
        .select_related("pyramid")
        .only("id", "state", "pyramid__path", "pyramid__sha256", "pyramid__options_key")
        .filter(pk=pk)
        .first()
    )
    if slide is None:
        raise exceptions.NotFound("No such slide.")
    if slide.pyramid is None:
        raise slide_service.SlideError(
            "The slide has no pyramid yet (it is not converted).", 409, "not_ready"
        )
    try:
        return slide, tiles.open_pyramid(slide.pyramid.full_path)
    except PyramidError:
        raise slide_service.SlideError(
            "The slide's pyramid file is missing; convert it again.", 409, "no_pyramid"
        ) from None


def _binary(request, data: bytes, content_type: str, etag: str) -> HttpResponse:
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(data, content_type=content_type)
    response["ETag"] = etag
    patch_cache_control(response, private=True, max_age=86400)
    return response


class PixelNegotiation(BaseContentNegotiation):
    """Pixels are sent as they are; errors as JSON. (`format` is the region's own parameter here,
    not DRF's renderer switch.)"""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


class PixelView(SlideErrorsMixin, APIView):
    """Base of the tile, region and image views (GET only)."""

    content_negotiation_class = PixelNegotiation
    renderer_classes = [JSONRenderer]

    def etag(self, slide, *parts) -> str:
        pyramid = slide.pyramid
        return '"' + "-".join([pyramid.sha256[:16], pyramid.options_key[:8], *map(str, parts)]) + '"'


class DeepZoomDescriptorView(PixelView):
    @extend_schema(responses={(200, "application/xml"): OpenApiTypes.STR})
    def get(self, request, pk):
        """The Deep Zoom (DZI) descriptor, for OpenSeadragon."""
        slide, pyramid = _pyramid_of(request, pk)
        return _binary(
            request, tiles.dzi_descriptor(pyramid).encode(), "application/xml", self.etag(slide, "dzi")
        )


class DeepZoomTileView(PixelView):
    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    def get(self, request, pk, level, x, y, fmt):
        """A Deep Zoom tile: `deepzoom_files/<level>/<x>_<y>.jpeg`."""
        slide, pyramid = _pyramid_of(request, pk)
        if fmt not in ("jpeg", "jpg", "png"):
            raise exceptions.NotFound("Tiles are .jpeg (or .png where the pyramid stores PNG).")
        try:
            data = tiles.dzi_tile(pyramid, int(level), int(x), int(y))
        except tiles.NoSuchTileError:
            raise exceptions.NotFound("No such tile.") from None
        kind = "image/png" if pyramid.metadata.get("tile_format") == "png" else "image/jpeg"
        return _binary(request, data, kind, self.etag(slide, "dz", level, x, y))


class PyramidTileView(PixelView):
    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    def get(self, request, pk, level, x, y):
        """A tile of the pyramid's own grid (level 0: one tile for the whole slide); background
        tiles come back white."""
        slide, pyramid = _pyramid_of(request, pk)
        try:
            data = tiles.stored_tile(pyramid, int(level), int(x), int(y))
        except (tiles.NoSuchTileError, PyramidError):
            raise exceptions.NotFound("No such tile.") from None
        kind = "image/png" if pyramid.metadata.get("tile_format") == "png" else "image/jpeg"
        return _binary(request, data, kind, self.etag(slide, "t", level, x, y))


def _int_param(request, name: str, default: int | None = None, minimum: int = 0) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        if default is None:
            raise exceptions.ValidationError({name: ["Required."]})
        return default
    try:
        number = int(value)
    except ValueError:
        raise exceptions.ValidationError({name: ["A whole number."]}) from None
    if number < minimum:
        raise exceptions.ValidationError({name: [f"At least {minimum}."]})
    return number


class RegionView(PixelView):
    @extend_schema(
        parameters=[
            OpenApiParameter("level", int, description="Pyramid level (default: full resolution)."),
            OpenApiParameter("x", int, required=True),
            OpenApiParameter("y", int, required=True),
            OpenApiParameter("width", int, required=True),
            OpenApiParameter("height", int, required=True),
            OpenApiParameter("format", str, enum=["png", "jpeg", "npy"], description="Default png."),
        ],
        responses={(200, "image/png"): OpenApiTypes.BINARY},
    )
    def get(self, request, pk):
        """Any rectangle at any level, in that level's pixels: PNG, JPEG or a numpy array (.npy,
        uint8, height × width × 3). Outside the slide is white."""
        slide, pyramid = _pyramid_of(request, pk)
        level = _int_param(request, "level", pyramid.level_count - 1)
        if level >= pyramid.level_count:
            raise exceptions.ValidationError({"level": [f"From 0 to {pyramid.level_count - 1}."]})
        x, y = _int_param(request, "x"), _int_param(request, "y")
        width, height = _int_param(request, "width", minimum=1), _int_param(request, "height", minimum=1)
        if width * height > tiles.MAX_REGION_PIXELS:
            raise exceptions.ValidationError(
                {"width": [f"A region has at most {tiles.MAX_REGION_PIXELS:,} pixels; read it in parts."]}
            )
        fmt = request.query_params.get("format", "png")
        if fmt not in ("png", "jpeg", "npy"):
            raise exceptions.ValidationError({"format": ["png, jpeg or npy."]})
        pixels = pyramid.read_region(level, x, y, width, height)
        data, kind = tiles.encode_region(pixels, fmt)
        return _binary(request, data, kind, self.etag(slide, "r", level, x, y, width, height, fmt))


class SlideImageView(PixelView):
    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    def get(self, request, pk, name):
        """An associated image: `thumbnail`, and where the scanner wrote them `label` and `macro`."""
        slide, pyramid = _pyramid_of(request, pk)
        found = pyramid.image(name)
        if found is None:
            raise exceptions.NotFound(f"This slide has no {name} image.")
        fmt, data = found
        return _binary(request, data, f"image/{fmt}", self.etag(slide, "i", name))


class AIErrorsMixin:
    """What the AI cannot work with (`AIError`) answered as a 4xx with its message and code."""

    def handle_exception(self, exc):
        if isinstance(exc, AIError):
            return Response({"detail": str(exc), "code": exc.code}, status=exc.status)
        return super().handle_exception(exc)


class ModelVersionViewSet(
    AIErrorsMixin,
    PortalViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """The AI model registry: model versions of your projects. POST (multipart: `file`, a TorchScript
    model, with `project` and its description) checks the model against the description and adds
    it as the next version of its name; versions never change. A classifier is described by its
    `classes`; a backbone (`kind` "backbone", described by its `features`) is only fine-tuned."""

    queryset = ModelVersion.objects.select_related("project")
    serializer_class = s.ModelVersionSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]  # JSON: told the file is missing

    @extend_schema(parameters=[OpenApiParameter("project", int), OpenApiParameter("name", str)])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        found = super().get_queryset()
        if self.action == "list":
            found = filter_by_ids(found, self.request.query_params, ("project",))
            if self.request.query_params.get("name"):
                found = found.filter(name=self.request.query_params["name"])
        return found

    @extend_schema(request=s.TrainingSerializer, responses={202: JobSerializer})
    @action(detail=False, methods=["post"], parser_classes=[JSONParser])
    def train(self, request):
        """Train a built-in network on the project's slides labelled in their metadata (split by
        patient) as a job on the `gpu` queue; the result is registered as the next version. With
        `base_model` a registered model of the project is fine-tuned instead (a backbone, or a
        classifier of other classes, under a new head for the training's classes)."""
        serializer = s.TrainingSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        project = data.pop("project")
        if not has_project_role(request.user, project, "writer"):
            raise exceptions.PermissionDenied("Training models needs the writer role in the project.")
        job = train_job.start(project, request.user, data, data.pop("slides", None))
        body = JobSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[
            OpenApiParameter("label", str, description="The pathologist's diagnosis (default diagnosis)."),
            OpenApiParameter("export", str, enum=["csv"], description="csv: the patient table as a file."),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer])
    def evaluation(self, request, pk=None):
        """Patient diagnoses from this version's finished inferences (majority vote and mean
        probability, per stain) beside the pathologist's, with the confusion matrix (rows: the
        pathologist's, columns: the AI's), per-class precision and recall, accuracy and the
        misclassified slides; `?export=csv` gives the patient table as CSV."""
        version = self.get_object()
        registry.require_classifier(version)
        report = ai_diagnosis.evaluate(version, request.query_params.get("label") or "diagnosis")
        if request.query_params.get("export") == "csv":
            response = HttpResponse(ai_diagnosis.csv_text(report), content_type="text/csv; charset=utf-8")
            name = f"{version.name}-v{version.version}-patients.csv"
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        return Response(report)

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["post"], url_path="write-diagnoses")
    def write_diagnoses(self, request, pk=None):
        """Append each patient's AI diagnosis to the patient's `ai_diagnosis` column (metadata
        events naming this model version), beside the pathologist's diagnosis in the sheet."""
        version = self.get_object()
        if not has_project_role(request.user, version.project, "writer"):
            raise exceptions.PermissionDenied("Writing diagnoses needs the writer role in the project.")
        registry.require_classifier(version)
        return Response({"patients": ai_diagnosis.write_back(version, request.user)})

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        project = data.pop("project")
        if not has_project_role(request.user, project, "writer"):
            raise exceptions.PermissionDenied("Adding models needs the writer role in the project.")
        upload = data.pop("file")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.pt"
            with open(path, "wb") as handle:
                for part in upload.chunks():
                    handle.write(part)
            version = registry.register(project, request.user, path, data)
        return Response(self.get_serializer(version).data, status=status.HTTP_201_CREATED)


class InferenceViewSet(
    AIErrorsMixin,
    PortalViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """A model version applied to slides of its project. POST {model_version, slides, mpp?} (or
    `all_slides`: true for every converted slide of the project) queues one job per slide (the
    `gpu` queue; the CPU where there is no GPU); `results/` gives every grid patch's centre
    (level-0 pixels), whether it shows tissue and its class probabilities."""

    queryset = Inference.objects.select_related("model_version", "slide")
    serializer_class = s.InferenceSerializer
    action_permissions = {"results": "view"}

    @extend_schema(parameters=[OpenApiParameter("slide", int), OpenApiParameter("model_version", int)])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        found = super().get_queryset()
        if self.action == "list":
            found = filter_by_ids(found, self.request.query_params, ("slide", "model_version"))
        return found

    @extend_schema(request=s.InferenceStartSerializer, responses=s.InferenceSerializer(many=True))
    def create(self, request, *args, **kwargs):
        serializer = s.InferenceStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = data["model_version"]
        visible = ModelVersion.objects.for_user(request.user, "view")
        if not visible.filter(pk=version.pk).exists():
            raise exceptions.ValidationError({"model_version": ["No such model version."]})
        if data["all_slides"]:
            if not has_project_role(request.user, version.project, "writer"):
                raise exceptions.PermissionDenied("Applying a model needs the writer role in the project.")
            slides = list(
                Slide.objects.select_related("pyramid").filter(
                    project=version.project, state=SlideState.READY
                )
            )
            if not slides:
                raise exceptions.ValidationError({"all_slides": ["The project has no converted slides."]})
        else:
            slides = list(
                Slide.objects.select_related("pyramid").filter(pk__in=[x.pk for x in data["slides"]])
            )
            for slide in slides:
                if not has_project_role(request.user, slide.project, "reader"):
                    raise exceptions.ValidationError({"slides": [f"No such slide: {slide.pk}."]})
                if not has_project_role(request.user, slide.project, "writer"):
                    raise exceptions.PermissionDenied(
                        "Applying a model needs the writer role in the project."
                    )
        made = ai_inference.start(version, slides, request.user, data.get("mpp"))
        return Response(s.InferenceSerializer(made, many=True).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        record = self.get_object()
        if record.state != "done":
            raise exceptions.NotFound(f"No results: the inference is {record.state}.")
        found = ai_inference.results(record)
        return Response(
            {
                "classes": record.model_version.classes,
                "colours": ai_inference.colours(record.model_version.classes),
                "tiles": f"/api/v1/inferences/{record.pk}/tiles/{{level}}/{{x}}/{{y}}",
                "side": float(found["side"]),
                "centres": found["centres"].round(1).tolist(),
                "tissue": found["tissue"].tolist(),
                "probabilities": found["probabilities"].astype(float).round(4).tolist(),
            }
        )


class InferenceTileView(APIView):
    """A PNG tile (RGBA) of an inference's diagnosis map, on the slide pyramid's levels and grid:
    each tissue patch in its class colour, as opaque as the model is sure."""

    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY})
    def get(self, request, pk: int, level: int, x: int, y: int):
        record = (
            Inference.objects.for_user(request.user, "view")
            .select_related("slide__pyramid", "model_version")
            .filter(pk=pk)
            .first()
        )
        if record is None:
            raise exceptions.NotFound("No such inference.")
        if record.state != "done":
            raise exceptions.NotFound(f"No map: the inference is {record.state}.")
        data = ai_inference.overlay_tile(record, level, x, y)
        if data is None:
            raise exceptions.NotFound("No such tile.")
        response = HttpResponse(data, content_type="image/png")
        patch_cache_control(response, private=True, max_age=86400)  # an inference never changes
        return response
