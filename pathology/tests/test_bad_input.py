"""Files that are not readable slides fail with a message that says what was found."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tifffile

from pathology.builder import PyramidOptions, build_slide_pyramid
from pathology.sources import SourceError, open_slide_source


def convert(path, tmp_path):
    source = open_slide_source(path)
    try:
        return build_slide_pyramid(source, tmp_path / "out.pyramid", PyramidOptions(tile_size=256, workers=2))
    finally:
        source.close()


def absurd_tiff(path):
    """A small tiled TIFF whose header claims 4 billion pixels a side."""
    tifffile.imwrite(path, np.zeros((512, 512, 3), np.uint8), tile=(256, 256), photometric="rgb")
    with tifffile.TiffFile(path) as tiff:
        offsets = [tiff.pages[0].tags[name].valueoffset for name in ("ImageWidth", "ImageLength")]
    data = bytearray(path.read_bytes())
    for offset in offsets:
        data[offset : offset + 4] = struct.pack("<I", 4_000_000_000)
    path.write_bytes(data)
    return path


def test_empty_text_image_and_archive_files_say_what_they_are(tmp_path):
    cases = {
        "empty.svs": (b"", "The file is empty (0 bytes)."),
        "notes.svs": (b"sample,stain\nS1,HE\n", "found a text file (19 bytes)"),
        "photo.svs": (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "found a PNG image"),
        "bundle.svs": (b"PK\x03\x04" + b"\0" * 100, "found a ZIP archive"),
        "noise.svs": (bytes(range(256)) * 4, "unrecognised data (1,024 bytes, starting 00 01 02"),
    }
    for name, (data, words) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError) as caught:
            open_slide_source(tmp_path / name)
        assert words in str(caught.value), str(caught.value)
        if data:
            assert "It reads Aperio SVS" in str(caught.value)


def test_a_tiff_claiming_absurd_dimensions_is_refused_before_anything_reads_it(tmp_path):
    with pytest.raises(SourceError, match=r"claims 4,000,000,000 × 4,000,000,000 pixels"):
        open_slide_source(absurd_tiff(tmp_path / "absurd.tif"))


def test_a_plain_tiff_is_read_through_large_image_and_a_broken_one_is_described(tmp_path):
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, np.zeros((40, 30), np.uint8))  # strips, greyscale, no pyramid
    source = open_slide_source(path)  # not OpenSlide's (not tiled), but large-image reads it
    assert source.reader.startswith("large-image") and (source.width, source.height) == (30, 40)
    source.close()
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\xff" * 60)  # a TIFF header pointing nowhere
    with pytest.raises(SourceError, match="Not a slide format the portal reads: found a TIFF file"):
        open_slide_source(broken)


def test_a_truncated_slide_fails_with_a_clear_message(slide_files, tmp_path):
    data = slide_files["aperio"].read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(SourceError) as caught:
        convert(cut, tmp_path)
    message = str(caught.value)
    assert "The file is cut off" in message and "send it again" in message, message
    assert not (tmp_path / "out.pyramid").exists() and not (tmp_path / ".out.pyramid.partial").exists()
