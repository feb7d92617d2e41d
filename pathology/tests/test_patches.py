"""Patches for the AI: physical size from microns per pixel, a tissue grid that covers every
tissue tile, reproducible augmented training draws that avoid blank patches, torch loaders with
several workers; a slide without microns per pixel is refused with a question."""

from __future__ import annotations

import numpy as np
import pytest

from pathology.ai import patches as p
from pathology.builder import PyramidOptions, build_slide_pyramid
from pathology.pyramid import SlidePyramid
from pathology.sources import open_slide_source

SPEC = p.PatchSpec(microns=64, input_size=32, mean=(0.8, 0.7, 0.8), std=(0.2, 0.2, 0.2))


@pytest.fixture(scope="module")
def pyramid(slide_files, tmp_path_factory):
    target = tmp_path_factory.mktemp("pyramids") / "tissue.pyramid"
    build_slide_pyramid(open_slide_source(slide_files["generic"]), target, PyramidOptions(tile_size=256))
    return str(target)


def test_patch_size_comes_from_microns_per_pixel(pyramid):
    assert p.patch_side(SPEC, 0.25) == 256
    for missing in (None, 0, float("nan")):
        with pytest.raises(p.PatchError, match="no microns per pixel"):
            p.patch_side(SPEC, missing)
    with pytest.raises(p.PatchError, match="microns per pixel"):
        p.GridPatches(pyramid, None, SPEC)
    with SlidePyramid(pyramid) as reader:
        assert reader.mpp[0] == pytest.approx(0.25)
        # 256 level-0 pixels are still 32 at a quarter: read there, not at full resolution
        level = p.reading_level(reader, 256, 32)
        assert reader.level_info(level).downsample == 8


def test_the_grid_covers_every_tissue_tile_and_only_tissue(pyramid):
    with SlidePyramid(pyramid) as reader:
        side = p.patch_side(SPEC, 0.25)
        centres = p.tissue_grid(reader, side)
        size = reader.tile_size
        covered = set()
        for cx, cy in centres:
            for tx in range(int((cx - side / 2) // size), int((cx + side / 2 - 1) // size) + 1):
                for ty in range(int((cy - side / 2) // size), int((cy + side / 2 - 1) // size) + 1):
                    covered.add((tx, ty))
        tissue = reader.tissue_tiles()
        assert tissue <= covered
        # every patch touches tissue
        for cx, cy in centres:
            touching = {
                (tx, ty)
                for tx in range(int((cx - side / 2) // size), int((cx + side / 2 - 1) // size) + 1)
                for ty in range(int((cy - side / 2) // size), int((cy + side / 2 - 1) // size) + 1)
            }
            assert touching & tissue
        patch = p.read_patch(reader, centres[0], side, SPEC)
        assert patch.shape == (32, 32, 3) and patch.dtype == np.uint8


def test_training_draws_are_reproducible_augmented_and_not_blank(pyramid):
    with SlidePyramid(pyramid) as reader:
        side = p.patch_side(SPEC, 0.25)
        centres = p.tissue_grid(reader, side)

        def draws(seed):
            rng = np.random.default_rng(seed)
            return [p.sample(reader, centres, side, SPEC, rng) for _ in range(12)]

        first, again, other = draws(7), draws(7), draws(8)
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
        assert all(patch.shape == (32, 32, 3) for patch in first)
        # the Canny check draws again where a patch is blank: most patches show tissue
        assert sum(p.edge_fraction(patch) >= p.EDGE_FRACTION for patch in first) >= 10
        blank = np.full((32, 32, 3), 255, dtype=np.uint8)
        assert p.edge_fraction(blank) == 0


def test_loaders_with_several_workers(pyramid):
    import torch
    from torch.utils.data import DataLoader

    training = p.SlidePatches([p.SlideItem(pyramid, 0.25, 1)], SPEC, length=16, seed=3)
    batches = list(DataLoader(training, batch_size=8, num_workers=2))
    again = list(DataLoader(training, batch_size=8, num_workers=0))
    assert [b[0].shape for b in batches] == [torch.Size([8, 3, 32, 32])] * 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))  # workers or not
    assert batches[0][1].tolist() == [1] * 8
    # normalised as the spec says: white (255) is (1 - mean) / std
    assert batches[0][0].max().item() == pytest.approx((1 - 0.7) / 0.2, abs=0.6)

    grid = p.GridPatches(pyramid, 0.25, SPEC)
    seen = [
        index
        for _, indexes, _ in DataLoader(grid, batch_size=32, num_workers=2)
        for index in indexes.tolist()
    ]
    assert sorted(seen) == list(range(len(grid))) and len(grid) == len(grid.centres) > 10
