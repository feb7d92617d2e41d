"""Slides from arrival to a ready pyramid: adding, converting (the job's work), converting again.

`add_slide` takes a file that is already on the server (moved into the data directory) and
starts the `pathology.convert` job. The job (`convert_slide`) walks the slide through its states:
hashing (SHA-256 of the file) → converting (a pyramid with the slide's settings, unless one of
the same file and settings exists: then it is linked, not converted again) → reading metadata →
ready; any problem ends in failed with a message meant for the user.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from pathology.builder import PyramidOptions, build_slide_pyramid
from pathology.models import Pyramid, Slide, SlideState
from pathology.pyramid import PyramidError
from pathology.sources import SourceError, open_slide_source
from portal.services.audit import record_audit_event
from portal.services.jobs import JobError, start_job

CONVERT_KIND = "pathology.convert"
READ_BLOCK = 4 * 1024 * 1024
OPTION_FIELDS = ("white_level", "max_white_fraction", "min_edge_fraction", "canny_sigma", "min_island_tiles")


class SlideError(Exception):
    """A request about a slide that cannot be done; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid"):
        super().__init__(message)
        self.status, self.code = status, code


def conversion_options(slide: Slide) -> PyramidOptions:
    """The slide's settings over the portal's defaults."""
    options = PyramidOptions(
        tile_size=settings.PATHOLOGY_TILE_SIZE,
        quality=settings.PATHOLOGY_TILE_QUALITY,
        workers=settings.PATHOLOGY_WORKERS or os.cpu_count() or 1,
    )
    for name, value in (slide.options or {}).items():
        if name in OPTION_FIELDS:
            setattr(options, name, type(getattr(options, name))(value))
    return options


def check_options(values: Any) -> dict[str, Any]:
    """Validated filter settings from a request (unknown names and bad values: SlideError)."""
    if values in (None, ""):
        return {}
    if not isinstance(values, dict):
        raise SlideError('The conversion settings are an object, e.g. {"max_white_fraction": 0.7}.')
    unknown = sorted(set(values) - set(OPTION_FIELDS))
    if unknown:
        raise SlideError(
            f"Unknown conversion settings: {', '.join(unknown)}. Known: {', '.join(OPTION_FIELDS)}."
        )
    options = PyramidOptions()
    cleaned = {}
    for name, value in values.items():
        kind = type(getattr(options, name))
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or (kind is int and value != int(value))
        ):
            raise SlideError(f"{name} is a number{' (whole)' if kind is int else ''}.")
        cleaned[name] = kind(value)
        setattr(options, name, kind(value))
    try:
        options.check()
    except ValueError as exc:
        raise SlideError(str(exc)) from None
    return cleaned


def options_key(options: PyramidOptions) -> str:
    return hashlib.sha256(json.dumps(options.filters(), sort_keys=True).encode()).hexdigest()


def safe_file_name(name: str) -> str:
    """The last part of a file name, without control characters; "slide" when nothing is left."""
    name = "".join(c for c in Path(str(name or "")).name if c.isprintable()).strip()[:200]
    return name if name and name not in (".", "..") else "slide"


def slide_directory(slide: Slide) -> Path:
    return Path(settings.PORTAL_DATA_DIR) / "slides" / str(slide.pk)


def add_slide(
    *,
    project,
    user,
    source: Path,
    file_name: str,
    name: str = "",
    options: dict | None = None,
    ingress: str = "api",
    move: bool = True,
    start: bool = True,
) -> Slide:
    """Take `source` into the data directory as a new slide of `project` and start converting it."""
    file_name = safe_file_name(file_name)
    size = source.stat().st_size
    if size > settings.PATHOLOGY_MAX_SLIDE_SIZE:
        raise SlideError(f"Slides are at most {settings.PATHOLOGY_MAX_SLIDE_SIZE:,} bytes.", status=413)
    with transaction.atomic():
        slide = Slide.objects.create(
            project=project,
            name=name or Path(file_name).stem,
            file_name=file_name,
            size=size,
            options=check_options(options),
            ingress=ingress,
            created_by=user if user is not None and user.is_authenticated else None,
            message="Waiting to be converted",
        )
        target = slide_directory(slide) / "source" / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        if move:
            shutil.move(str(source), target)
        else:
            shutil.copyfile(source, target)
        slide.source_path = str(target.relative_to(settings.PORTAL_DATA_DIR))
        slide.save(update_fields=["source_path"])
        record_audit_event("pathology.slide_added", actor=user, obj=slide, file=file_name, ingress=ingress)
        if start:
            start_conversion(slide, user)
    return slide


def add_slide_from_upload(
    *, project, user, upload: int, name: str = "", options: dict | None = None
) -> Slide:
    """A new slide from the user's finished chunked upload (purpose "slide")."""
    from storage.models import UploadSession
    from storage.services.sessions import take_file

    checked = check_options(options)  # before the upload is spent
    session = UploadSession.objects.filter(pk=upload, owner=user).first() if upload else None
    file_name = safe_file_name(session.file_name) if session else "slide"
    holding = Path(settings.PORTAL_DATA_DIR) / "uploads" / f"taken-{uuid.uuid4().hex}" / file_name
    with transaction.atomic():
        session = take_file(
            upload, user=user, purpose="slide", destination=holding, used_by="pathology.slide"
        )
        try:
            slide = add_slide(
                project=project,
                user=user,
                source=holding,
                file_name=session.file_name,
                name=name,
                options=checked,
                ingress="upload",
            )
        except BaseException:
            # The transaction is undone: give the file back to the session.
            session.path.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(holding), session.path)
            raise
        finally:
            shutil.rmtree(holding.parent, ignore_errors=True)
        UploadSession.objects.filter(pk=session.pk).update(used_by=f"pathology.slide:{slide.pk}")
    return slide


def add_slide_from_dataset(
    *, project, user, dataset, key: bytes, name: str = "", options: dict | None = None
) -> Slide:
    """A new slide from an encrypted dataset `user` may read, decrypted by the worker with `key`
    (checked against the dataset's key fingerprint here; the job gets it only sealed)."""
    from storage.models import DatasetState
    from storage.services import access
    from storage.services.rekey import seal_for_job

    access.require_grant(user, dataset)
    access.check_key(dataset, key)
    if dataset.state != DatasetState.AVAILABLE:
        raise SlideError(
            f"The dataset {dataset.mnemonic} is {dataset.get_state_display().lower()}.", 409, "not_ready"
        )
    if dataset.size > settings.PATHOLOGY_MAX_SLIDE_SIZE:
        raise SlideError(f"Slides are at most {settings.PATHOLOGY_MAX_SLIDE_SIZE:,} bytes.", 413, "too_large")
    checked = check_options(options)
    with transaction.atomic():
        slide = Slide.objects.create(
            project=project,
            name=name or Path(dataset.file_name).stem,
            file_name=safe_file_name(dataset.file_name),
            size=dataset.size,
            options=checked,
            ingress="dataset",
            created_by=user,
            message=f"Waiting to be decrypted from dataset {dataset.mnemonic}",
        )
        target = slide_directory(slide) / "source" / slide.file_name
        slide.source_path = str(target.relative_to(settings.PORTAL_DATA_DIR))
        slide.save(update_fields=["source_path"])
        record_audit_event(
            "pathology.slide_added",
            actor=user,
            obj=slide,
            file=slide.file_name,
            ingress="dataset",
            dataset=dataset.mnemonic,
        )
        params = {
            "slide": slide.pk,
            "dataset": dataset.pk,
            "sealed_key": seal_for_job(key, _dataset_purpose(dataset, slide)),
        }
        start_job(CONVERT_KIND, user=user, target=slide, params=params)
    return slide


def _dataset_purpose(dataset, slide: Slide) -> str:
    return f"pathology-import:{dataset.mnemonic}:{dataset.generation}:{slide.pk}"


def _decrypt_dataset(slide: Slide, dataset_id: int, sealed_key: str, progress) -> None:
    """Write the dataset's plaintext as the slide's source file (tags and hashes checked)."""
    from storage.models import Dataset
    from storage.services import downloads
    from storage.services.rekey import unseal_for_job

    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None:
        raise SlideError("The dataset to import is gone.")
    key = unseal_for_job(sealed_key, _dataset_purpose(dataset, slide))
    _set_state(slide, SlideState.UPLOADED, f"decrypting dataset {dataset.mnemonic}", progress)
    target = slide.source_full_path
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    done = 0
    try:
        with open(partial, "wb") as handle:
            for piece in downloads.plaintext(dataset, key):
                handle.write(piece)
                done += len(piece)
                progress(0.05 * done / max(1, dataset.size), None)
    except Exception as exc:  # noqa: BLE001 - integrity and read errors alike, for the user
        partial.unlink(missing_ok=True)
        raise SlideError(
            f"The dataset could not be decrypted: {getattr(exc, 'message', None) or exc}"
        ) from None
    partial.replace(target)
    Slide.objects.filter(pk=slide.pk).update(size=done)


def start_conversion(slide: Slide, user, options: dict | None = None):
    """(Re)start the slide's conversion job; `options`: new filter settings for it."""
    if options is not None:
        slide.options = check_options(options)
    slide.state = SlideState.UPLOADED
    slide.message = "Waiting to be converted"
    slide.progress = 0
    slide.save(update_fields=["options", "state", "message", "progress", "updated_at"])
    return start_job(CONVERT_KIND, user=user, target=slide, params={"slide": slide.pk})


BUSY_STATES = (SlideState.UPLOADED, SlideState.HASHING, SlideState.CONVERTING, SlideState.READING_METADATA)


def is_busy(slide: Slide) -> bool:
    """Is a conversion of the slide queued or running? A slide left in a busy state by a job that
    ended without saying (its worker was killed, a time limit) is marked failed here."""
    from portal.models import Job
    from portal.models.jobs import FINAL_STATES

    if slide.state not in BUSY_STATES:
        return False
    job = Job.objects.filter(kind=CONVERT_KIND, target_id=slide.pk).order_by("-pk").first()
    if job is None or job.state not in FINAL_STATES:
        return True
    message = job.error or job.message or "The conversion stopped."
    Slide.objects.filter(pk=slide.pk, state=slide.state).update(
        state=SlideState.FAILED, message=message[:2000], updated_at=timezone.now()
    )
    slide.state, slide.message = SlideState.FAILED, message
    return False


def reconvert(slide: Slide, user, options: dict | None = None):
    """Convert again (after a failure, or with other filter settings)."""
    if is_busy(slide) or slide.state not in (SlideState.FAILED, SlideState.READY):
        raise SlideError(
            "The slide is being converted already; wait until it is ready or failed.", 409, "busy"
        )
    if not slide.source_full_path.is_file():
        raise SlideError("The slide's source file is gone; add the slide again.", 409, "source_missing")
    return start_conversion(slide, user, options)


def delete_slide(slide: Slide, user) -> None:
    """Remove a slide with its files; its pyramid goes too unless another slide shows it."""
    pyramid = slide.pyramid
    record_audit_event("pathology.slide_deleted", actor=user, obj=slide)
    directory = slide_directory(slide)
    slide.delete()
    shutil.rmtree(directory, ignore_errors=True)
    if pyramid is not None and not Slide.objects.filter(pyramid=pyramid).exists():
        path = pyramid.full_path
        pyramid.delete()
        path.unlink(missing_ok=True)


def _set_state(slide: Slide, state: str, message: str, progress) -> None:
    slide.state, slide.message = state, message
    Slide.objects.filter(pk=slide.pk).update(state=state, message=message, updated_at=timezone.now())
    progress(None, f"{SlideState(state).label}: {message}" if message else SlideState(state).label)


def file_sha256(path: Path, report=None) -> str:
    digest = hashlib.sha256()
    size = max(1, path.stat().st_size)
    done = 0
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
            done += len(block)
            if report:
                report(done / size)
    return digest.hexdigest()


def convert_slide(job, progress, *, slide: int, dataset: int | None = None, sealed_key: str = "") -> dict:
    """The conversion job's work (see the module docstring); with `dataset`, the slide's file is
    first decrypted from that dataset with the sealed key."""
    try:
        obj = Slide.objects.get(pk=slide)
    except Slide.DoesNotExist:
        raise JobError(f"Slide {slide} no longer exists.") from None
    try:
        if dataset is not None and not obj.source_full_path.is_file():
            _decrypt_dataset(obj, dataset, sealed_key, progress)
        return _convert(obj, progress)
    except (SourceError, PyramidError, SlideError, ValueError, OSError, JobError) as exc:
        message = str(exc) or type(exc).__name__
        Slide.objects.filter(pk=obj.pk).update(
            state=SlideState.FAILED, message=message, updated_at=timezone.now()
        )
        record_audit_event("pathology.slide_failed", actor=None, obj=obj, error=message[:500])
        raise JobError(message) from None


def _convert(slide: Slide, progress) -> dict:
    source_path = slide.source_full_path
    if not source_path.is_file():
        raise SlideError("The slide's source file is missing.")
    _set_state(slide, SlideState.HASHING, "computing the file's SHA-256", progress)
    sha = file_sha256(source_path, lambda f: progress(0.1 * f))
    Slide.objects.filter(pk=slide.pk).update(sha256=sha)
    options = conversion_options(slide)
    key = options_key(options)

    existing = Pyramid.objects.filter(sha256=sha, options_key=key).first()
    if existing is not None and existing.full_path.is_file():
        first = Slide.objects.filter(pyramid=existing).exclude(pk=slide.pk).order_by("pk").first()
        message = (
            f"The same file as slide “{first.name}” (#{first.pk}): its pyramid is used, not converted again."
            if first
            else "This file was converted before with the same settings: that pyramid is used."
        )
        Slide.objects.filter(pk=slide.pk).update(
            pyramid=existing,
            duplicate_of=first,
            state=SlideState.READY,
            message=message,
            progress=1,
            updated_at=timezone.now(),
        )
        progress(1.0, message)
        return {"slide": slide.pk, "pyramid": existing.pk, "duplicate_of": first.pk if first else None}

    _set_state(slide, SlideState.CONVERTING, "opening the file", progress)
    if zipfile.is_zipfile(source_path):
        source_path = unpack_archive(source_path, slide_directory(slide) / "unpacked")
    source = open_slide_source(source_path, max_side=settings.PATHOLOGY_MAX_SIDE)
    relative = Path("pyramids") / sha[:2] / f"{sha}-{key[:12]}.pyramid"
    target = Path(settings.PORTAL_DATA_DIR) / relative
    try:
        result = build_slide_pyramid(
            source,
            target,
            options,
            progress=lambda fraction, message: progress(0.1 + 0.85 * fraction, f"Converting: {message}"),
            extra_metadata={"source_sha256": sha, "source_name": slide.file_name},
        )
    finally:
        source.close()

    _set_state(slide, SlideState.READING_METADATA, "recording what the pyramid holds", progress)
    meta = result.metadata
    fields = {
        "path": str(relative),
        "width": result.width,
        "height": result.height,
        "levels": result.levels,
        "tile_size": result.tile_size,
        "tile_format": meta["tile_format"],
        "mpp_x": meta.get("mpp_x"),
        "mpp_y": meta.get("mpp_y"),
        "objective_power": meta.get("objective_power"),
        "vendor": (meta.get("vendor") or "")[:100],
        "reader": (meta.get("reader") or "")[:100],
        "properties": meta.get("properties") or {},
        "filters": meta.get("filters") or {},
        "tissue_tiles": result.tissue_tiles,
        "background_tiles": result.background_tiles,
        "removed_island_tiles": result.removed_island_tiles,
        "images": _image_names(target),
        "file_size": target.stat().st_size,
        "seconds": round(result.seconds, 3),
    }
    try:
        with transaction.atomic():
            pyramid, _ = Pyramid.objects.update_or_create(sha256=sha, options_key=key, defaults=fields)
    except IntegrityError:  # converted at the same time by another slide of the same file
        pyramid = Pyramid.objects.get(sha256=sha, options_key=key)
    message = (
        f"{result.width:,} × {result.height:,} pixels, {result.levels} levels, "
        f"{result.tissue_tiles:,} tissue tiles ({result.background_tiles:,} background, "
        f"{result.removed_island_tiles:,} in small islands removed)"
    )
    Slide.objects.filter(pk=slide.pk).update(
        pyramid=pyramid, state=SlideState.READY, message=message, progress=1, updated_at=timezone.now()
    )
    progress(1.0, f"Ready: {message}")
    return {
        "slide": slide.pk,
        "pyramid": pyramid.pk,
        "tissue_tiles": result.tissue_tiles,
        "levels": result.levels,
    }


# The file to open in an archive, by kind, most specific first: MIRAX and Hamamatsu VMS index the
# other files; a DICOM WSI is any instance of the series (OpenSlide finds the others beside it).
SLIDE_SUFFIXES = (".mrxs", ".vms", ".svs", ".ndpi", ".scn", ".bif", ".svslide", ".tif", ".tiff", ".dcm")
MAX_ARCHIVE_MEMBERS = 100_000


def unpack_archive(archive: Path, target: Path) -> Path:
    """Unpack a ZIP of a slide made of several files (MIRAX, VMS, DICOM WSI, or one file zipped)
    and return the file to open. Refuses paths that leave the folder, links and oversize content."""
    import openslide

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with zipfile.ZipFile(archive) as bundle:
        members = [m for m in bundle.infolist() if not m.is_dir()]
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise SlideError(f"The archive holds {len(members):,} files; at most {MAX_ARCHIVE_MEMBERS:,}.")
        total = sum(m.file_size for m in members)
        if total > settings.PATHOLOGY_MAX_SLIDE_SIZE:
            raise SlideError(
                f"The archive unpacks to {total:,} bytes; slides are at most "
                f"{settings.PATHOLOGY_MAX_SLIDE_SIZE:,}."
            )
        for member in members:
            name = Path(member.filename)
            if (
                name.is_absolute()
                or ".." in name.parts
                or (member.external_attr >> 16) & 0o170000 == 0o120000
            ):
                raise SlideError(
                    f"The archive's entry {member.filename!r} points outside it; nothing was unpacked."
                )
        try:
            bundle.extractall(target)
        except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
            raise SlideError(f"The ZIP archive cannot be unpacked: {exc}") from None
    files = sorted(p for p in target.rglob("*") if p.is_file())
    for suffix in SLIDE_SUFFIXES:
        for path in files:
            if path.suffix.lower() == suffix and openslide.OpenSlide.detect_format(str(path)):
                return path
    for path in files:  # other formats large-image reads (e.g. a striped OME-TIFF)
        if path.suffix.lower() in (".tif", ".tiff", ".btf"):
            return path
    names = ", ".join(str(p.relative_to(target)) for p in files[:10]) or "nothing"
    raise SlideError(f"The ZIP archive holds no slide the portal reads (found: {names}).")


def _image_names(path: Path) -> list[str]:
    from pathology.pyramid import SlidePyramid

    with SlidePyramid(path) as pyramid:
        return pyramid.image_names()
