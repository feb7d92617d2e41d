"""What a file seems to be, in words, for messages that refuse it ("found a ZIP archive")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

MAGIC: list[tuple[Callable[[bytes], bool], str]] = [
    (lambda h: h.startswith(b"\x89PNG"), "a PNG image"),
    (lambda h: h.startswith(b"\xff\xd8\xff"), "a JPEG image"),
    (lambda h: h.startswith(b"%PDF"), "a PDF document"),
    (lambda h: h.startswith(b"PK\x03\x04"), "a ZIP archive"),
    (lambda h: h.startswith(b"\x1f\x8b"), "a gzip-compressed file"),
    (lambda h: h.startswith(b"BM"), "a BMP image"),
    (lambda h: h.startswith(b"GIF8"), "a GIF image"),
    (lambda h: is_tiff(h), "a TIFF image"),
    (lambda h: len(h) > 132 and h[128:132] == b"DICM", "a DICOM file"),
    (lambda h: h.startswith(b"SQLite format 3"), "an SQLite database"),
]


def is_tiff(head: bytes) -> bool:
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def describe_file(path: Path, data: bytes | None = None) -> str:
    """E.g. "a PNG image (1,234 bytes)", "a text file (19 bytes)", "unrecognised data (…)"; of
    `data` when given (the file's bytes, read already), else of the file at `path`."""
    if data is not None:
        size, head = len(data), data[:4096]
    else:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(4096)
    if size == 0:
        return "an empty file (0 bytes)"
    for test, words in MAGIC:
        if test(head):
            return f"{words} ({size:,} bytes)"
    try:
        head.decode("utf-8")
        return f"a text file ({size:,} bytes)"
    except UnicodeDecodeError:
        return f"unrecognised data ({size:,} bytes, starting {head[:8].hex(' ')})"
