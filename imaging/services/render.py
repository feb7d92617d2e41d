"""Pixels of stored instances: raw frames for WADO-RS, and rendered images (window/level applied)
for rendered resources, thumbnails and the built-in viewer.

Rendering: the modality LUT (rescale slope and intercept), then a window – the one asked for, else
the file's first Window Center/Width, else an automatic one from the 1st and 99th percentiles of
the frame – with the linear or sigmoid function; MONOCHROME1 is inverted; colour is shown as it is
(YBR pixel data as RGB: pydicom decodes it so).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


class PixelError(Exception):
    """The pixels cannot be given as asked (no image, a frame that does not exist, a codec missing)."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"  # or "sigmoid"


def parse_window(text: str | None) -> Window | None:
    """`center,width[,function]` (DICOMweb's `window` parameter)."""
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        center, width = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise PixelError("window is center,width[,linear|sigmoid], e.g. 40,400") from None
    function = parts[2].lower() if len(parts) > 2 else "linear"
    if width <= 0 or function not in ("linear", "sigmoid", "linear_exact"):
        raise PixelError("the window width is positive and the function linear, linear_exact or sigmoid")
    return Window(center, width, function)


def read(path):
    import pydicom

    return pydicom.dcmread(path)


def frame_count(dataset) -> int:
    return int(dataset.get("NumberOfFrames", 1) or 1)


def raw_frames(dataset, numbers: list[int]) -> tuple[list[bytes], str]:
    """The frames as stored: (bytes of each, media type). Native pixel data is sliced;
    encapsulated frames are given with their codec's media type."""
    if "PixelData" not in dataset:
        raise PixelError("this instance has no pixel data")
    count = frame_count(dataset)
    if any(n < 1 or n > count for n in numbers):
        raise PixelError(f"frames are numbered 1 to {count}")
    syntax = dataset.file_meta.TransferSyntaxUID
    if not syntax.is_encapsulated:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        size = rows * columns * int(dataset.get("SamplesPerPixel", 1)) * int(dataset.BitsAllocated) // 8
        data = dataset.PixelData
        return [bytes(data[(n - 1) * size : n * size]) for n in numbers], "application/octet-stream"
    from pydicom.encaps import generate_frames

    frames = list(generate_frames(dataset.PixelData, number_of_frames=count))
    kind = MEDIA_TYPES.get(str(syntax), "application/octet-stream")
    return [frames[n - 1] for n in numbers], kind


MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


def decoded_frame(dataset, number: int = 1) -> np.ndarray:
    """One frame as numbers (modality LUT applied for greyscale)."""
    if "PixelData" not in dataset:
        raise PixelError("this instance has no pixel data")
    count = frame_count(dataset)
    if not 1 <= number <= count:
        raise PixelError(f"frames are numbered 1 to {count}")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # noqa: BLE001 - missing codecs and damaged data alike
        raise PixelError(f"the pixel data cannot be decoded here ({exc})") from None
    if count > 1:
        pixels = pixels[number - 1]
    if dataset.get("SamplesPerPixel", 1) == 1:
        slope = float(dataset.get("RescaleSlope", 1) or 1)
        intercept = float(dataset.get("RescaleIntercept", 0) or 0)
        pixels = pixels.astype(np.float32) * slope + intercept
    return pixels


def _first(value):
    if value is None:
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def window_of(dataset, pixels: np.ndarray) -> Window:
    """The file's own window, else an automatic one (1st to 99th percentile)."""
    center, width = _first(dataset.get("WindowCenter")), _first(dataset.get("WindowWidth"))
    if center is not None and width and width > 0:
        return Window(center, width)
    low, high = np.percentile(pixels, [1, 99]) if pixels.size else (0.0, 1.0)
    if high <= low:
        low, high = float(pixels.min(initial=0)), float(pixels.max(initial=1))
    return Window((low + high) / 2, max(high - low, 1.0))


def render(dataset, number: int = 1, window: Window | None = None, size: int | None = None) -> Image.Image:
    """A frame as an 8-bit image for people to look at."""
    pixels = decoded_frame(dataset, number)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3:  # colour: pydicom (3 and later) gives YBR pixel data as RGB already
        if pixels.dtype != np.uint8:
            top = float(pixels.max()) or 1.0
            pixels = (pixels.astype(np.float32) / top * 255).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(pixels[..., :3], "RGB")
    else:
        chosen = window or window_of(dataset, pixels)
        if chosen.function == "sigmoid":
            scaled = 255 / (1 + np.exp(-4 * (pixels - chosen.center) / chosen.width))
        else:
            low = chosen.center - 0.5 - (chosen.width - 1) / 2
            scaled = (pixels - low) / max(chosen.width - 1, 1) * 255
        grey = np.clip(scaled, 0, 255).astype(np.uint8)
        if photometric == "MONOCHROME1":
            grey = 255 - grey
        image = Image.fromarray(grey, "L")
    if size:
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image


def encode(image: Image.Image, media_type: str, quality: int = 90) -> bytes:
    out = io.BytesIO()
    if media_type == "image/png":
        image.save(out, "PNG")
    else:
        image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
            out, "JPEG", quality=quality
        )
    return out.getvalue()
