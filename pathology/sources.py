"""Opening scanner files: OpenSlide first (every format OpenSlide 4 reads), then large-image's
tifffile and libtiff sources (OME-TIFF and other TIFFs OpenSlide leaves out).

`open_slide_source(path)` gives a `SlideSource` with the slide's size, resolution, vendor,
properties and associated images, and `read(x, y, width, height)` for full-resolution pixels
(RGB, transparent parts on white). A file nothing reads fails with `SourceError` naming what was
found in it. No Django here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from portal.services.files import is_tiff

MAX_SIDE = 1_000_000  # pixels; the largest scanners write about 200,000

FORMATS = (
    "Aperio SVS, Hamamatsu NDPI/VMS, Leica SCN, MIRAX, Philips TIFF, Sakura, Trestle, Ventana, "
    "DICOM WSI, generic tiled TIFF, OME-TIFF"
)


class SourceError(Exception):
    """The file cannot be read as a slide; the message says why, for the user."""


class SlideSource:
    """A readable slide. Subclasses fill the attributes and implement `_read`."""

    reader = ""
    width = 0
    height = 0
    vendor = ""
    mpp_x: float | None = None
    mpp_y: float | None = None
    objective_power: float | None = None
    properties: dict[str, str]

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Full-resolution RGB pixels (height, width, 3) of a rectangle; outside is white."""
        try:
            return self._read(x, y, width, height)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(
                f"The slide could not be read at ({x}, {y}): {str(exc) or type(exc).__name__}. "
                "The file may be truncated or damaged."
            ) from exc

    def _read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        raise NotImplementedError

    def associated_images(self) -> dict[str, Image.Image]:
        return {}

    def close(self) -> None:
        pass


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA (not premultiplied) over white, as RGB."""
    if rgba.shape[2] == 3:
        return rgba
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    rgb = rgba[..., :3].astype(np.uint16)
    a = alpha[..., None].astype(np.uint16)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Any numpy image (grey, grey+alpha, RGB, RGBA; 8 or 16 bit, float) as RGB uint8."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.dtype != np.uint8:
        if np.issubdtype(pixels.dtype, np.floating):
            top = 1.0 if pixels.max(initial=0) <= 1.0 else float(pixels.max())
            pixels = np.clip(pixels / top * 255, 0, 255).astype(np.uint8)
        else:
            shift = max(0, np.iinfo(pixels.dtype).bits - 8)
            pixels = (pixels >> shift).astype(np.uint8)
    bands = pixels.shape[2]
    if bands == 1:
        return np.repeat(pixels, 3, axis=2)
    if bands == 2:  # grey + alpha
        grey = np.repeat(pixels[..., :1], 3, axis=2)
        return _on_white(np.concatenate([grey, pixels[..., 1:2]], axis=2))
    if bands >= 4:
        return _on_white(np.ascontiguousarray(pixels[..., :4]))
    return pixels


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and number == number else None


class OpenSlideSource(SlideSource):
    reader = "openslide"

    def __init__(self, path: Path):
        import openslide

        self._slide = openslide.OpenSlide(str(path))
        self.width, self.height = self._slide.dimensions
        props = dict(self._slide.properties)
        self.properties = props
        self.vendor = props.get(openslide.PROPERTY_NAME_VENDOR, "") or ""
        self.mpp_x = _number(props.get(openslide.PROPERTY_NAME_MPP_X))
        self.mpp_y = _number(props.get(openslide.PROPERTY_NAME_MPP_Y))
        self.objective_power = _number(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))

    def _read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        region = self._slide.read_region((x, y), 0, (width, height))
        if region.getchannel("A").getextrema()[0] == 255:  # opaque everywhere: the common case
            return np.asarray(region.convert("RGB"))
        white = Image.new("RGBA", region.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, region).convert("RGB"))

    def associated_images(self) -> dict[str, Image.Image]:
        return {name: image for name, image in self._slide.associated_images.items()}

    def close(self) -> None:
        self._slide.close()


class LargeImageSource(SlideSource):
    """large-image's tifffile or tiff source (OME-TIFF, multi-resolution TIFFs OpenSlide skips)."""

    def __init__(self, path: Path):
        import large_image

        self._source = large_image.open(str(path), noCache=True)
        self.reader = f"large-image ({self._source.name})"
        self.width, self.height = int(self._source.sizeX), int(self._source.sizeY)
        metadata = self._source.getMetadata()
        mm_x, mm_y = _number(metadata.get("mm_x")), _number(metadata.get("mm_y"))
        self.mpp_x = mm_x * 1000 if mm_x else None
        self.mpp_y = mm_y * 1000 if mm_y else None
        self.objective_power = _number(metadata.get("magnification"))
        self.vendor = self._source.name
        try:
            internal = self._source.getInternalMetadata() or {}
        except Exception:  # noqa: BLE001 - optional
            internal = {}
        self.properties = {str(k): str(v)[:2000] for k, v in _flatten(internal).items()}
        self._lock = threading.Lock()  # large-image sources are not documented as thread-safe

    def _read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        import large_image

        out = np.full((height, width, 3), 255, dtype=np.uint8)
        left, top = max(0, x), max(0, y)
        right, bottom = min(self.width, x + width), min(self.height, y + height)
        if right <= left or bottom <= top:
            return out
        with self._lock:
            pixels, _ = self._source.getRegion(
                region={"left": left, "top": top, "right": right, "bottom": bottom, "units": "base_pixels"},
                format=large_image.constants.TILE_FORMAT_NUMPY,
            )
        pixels = _to_rgb8(np.asarray(pixels))
        h, w = min(pixels.shape[0], bottom - top), min(pixels.shape[1], right - left)
        out[top - y : top - y + h, left - x : left - x + w] = pixels[:h, :w]
        return out

    def associated_images(self) -> dict[str, Image.Image]:
        found = {}
        try:
            names = self._source.getAssociatedImagesList()
        except Exception:  # noqa: BLE001 - optional
            return found
        for name in names:
            try:
                image, _ = self._source.getAssociatedImage(name, format="PIL")
                found[name] = image
            except Exception:  # noqa: BLE001, S112 - a damaged label does not stop the slide
                continue
        return found


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in list(value.items())[:500]:
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def describe_file(path: Path) -> str:
    """What a file that is not a readable slide seems to be, in words (a TIFF in detail)."""
    from portal.services.files import describe_file as describe
    from portal.services.files import is_tiff

    with open(path, "rb") as handle:
        head = handle.read(8)
    if is_tiff(head):
        return _describe_tiff(path, path.stat().st_size)
    return describe(path).replace("a DICOM file", "a DICOM file without a whole-slide image")


def _describe_tiff(path: Path, size: int) -> str:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            pages = list(tiff.pages)
            first = pages[0]
            tiled = "tiled" if first.is_tiled else "not tiled (strips)"
            return (
                f"a TIFF file ({size:,} bytes) with {len(pages)} image{'s' * (len(pages) != 1)}, the first "
                f"{first.imagewidth:,} × {first.imagelength:,} pixels, {tiled}, "
                f"{first.compression.name.lower()} compression"
            )
    except Exception as exc:  # noqa: BLE001 - describing, not reading
        return f"a TIFF file ({size:,} bytes) that cannot be parsed ({exc})"


def _check_tiff(path: Path, max_side: int) -> None:
    """For TIFF-based files, before any reader allocates for them: the sizes the headers claim,
    and whether the image data they point to lies inside the file (a cut-off upload does not)."""
    with open(path, "rb") as handle:
        if not is_tiff(handle.read(4)):
            return
    import tifffile

    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tiff:
            pages = list(tiff.pages[:64])
            largest = max(((int(p.imagewidth), int(p.imagelength)) for p in pages), key=max, default=(0, 0))
            if max(largest) > max_side:
                raise SourceError(
                    f"The file claims {largest[0]:,} × {largest[1]:,} pixels; a slide may have at most "
                    f"{max_side:,} per side. The file is damaged or not a slide."
                )
            for number, page in enumerate(pages):
                ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if c]
                if ends and max(ends) > size:
                    raise SourceError(
                        f"The file is cut off: image {number + 1} needs data up to byte {max(ends):,} but "
                        f"the file has {size:,} bytes. The upload or copy was incomplete: send it again."
                    )
    except SourceError:
        raise
    except Exception:  # noqa: BLE001 - the readers will say what is wrong
        return


_OME_UNITS = {"nm": 0.001, "µm": 1.0, "um": 1.0, "mm": 1000.0, "cm": 10000.0, "m": 1e6}


def _tiff_resolution(path: Path) -> tuple[float | None, float | None, bool]:
    """Microns per pixel from OME-XML (PhysicalSizeX/Y) or the resolution tags, and whether the
    file is OME-TIFF: for readers that leave them out."""
    import re

    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            ome = tiff.ome_metadata
            if ome:
                found = {}
                for axis in ("X", "Y"):
                    match = re.search(rf'PhysicalSize{axis}="([0-9.eE+-]+)"', ome)
                    unit = re.search(rf'PhysicalSize{axis}Unit="([^"]+)"', ome)
                    if match:
                        scale = _OME_UNITS.get(unit.group(1) if unit else "µm", 1.0)
                        found[axis] = float(match.group(1)) * scale
                return found.get("X"), found.get("Y", found.get("X")), True
            page = tiff.pages[0]
            unit = page.tags.get("ResolutionUnit")
            per = {2: 25_400.0, 3: 10_000.0}.get(int(unit.value) if unit else 2)
            xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
            if per and xres and yres and unit and int(unit.value) in (2, 3):
                x = xres.value[0] / xres.value[1] if xres.value[1] else 0
                y = yres.value[0] / yres.value[1] if yres.value[1] else 0
                if x > 0 and y > 0:
                    return per / x, per / y, False
    except Exception:  # noqa: BLE001 - resolution is optional
        return None, None, False
    return None, None, False


def open_slide_source(path: str | Path, *, max_side: int = MAX_SIDE) -> SlideSource:
    """Open a scanner file with the first reader that takes it; `SourceError` if none does."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"The file {path.name} is not there.")
    if path.stat().st_size == 0:
        raise SourceError("The file is empty (0 bytes).")
    _check_tiff(path, max_side)
    problems = []
    source: SlideSource | None = None
    import openslide

    vendor = openslide.OpenSlide.detect_format(str(path))
    if vendor:
        # OpenSlide knows the format: if it cannot open the file, the file is damaged, and other
        # readers would only fill the gaps with made-up pixels.
        try:
            source = OpenSlideSource(path)
        except Exception as exc:  # noqa: BLE001 - every OpenSlide error, for the user
            raise SourceError(
                f"The file looks like a {vendor} slide but cannot be read ({exc}). It may be truncated "
                "or damaged: upload it again."
            ) from None
    if source is None:
        try:
            import large_image

            if large_image.canRead(str(path)):
                source = LargeImageSource(path)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"large-image: {exc}")
    if source is None:
        found = describe_file(path)
        why = f" ({'; '.join(problems)})" if problems else ""
        raise SourceError(f"Not a slide format the portal reads: found {found}{why}. It reads {FORMATS}.")
    if source.mpp_x is None:
        mpp_x, mpp_y, is_ome = _tiff_resolution(path)
        source.mpp_x, source.mpp_y = _number(mpp_x), _number(mpp_y)
        if is_ome:
            source.vendor = "ome-tiff"
    if not (0 < source.width <= max_side and 0 < source.height <= max_side):
        source.close()
        raise SourceError(
            f"The file claims {source.width:,} × {source.height:,} pixels; a slide may have 1 to "
            f"{max_side:,} per side. The file is damaged or not a slide."
        )
    return source
