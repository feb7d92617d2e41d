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


# (patch side µm, input pixels): read at 1/8 and resized from 25 px; at 1/4, 50 px resized to 32,
# patches across tile edges; at full resolution, 32 px as they are
SPECS = [(50.0, 32), (8.0, 32), (64.0, 24)]


@pytest.mark.parametrize(("microns", "size"), SPECS)
def test_batches_give_the_pixels_of_the_plain_path(pyramid, microns, size):
    import torch

    spec = p.PatchSpec(microns=microns, input_size=size, mean=SPEC.mean, std=SPEC.std)
    grid = p.GridPatches(pyramid, 0.25, spec)
    plan = grid.plan(16)
    assert sorted(np.concatenate(plan).tolist()) == list(range(len(grid)))
    assert all(len(batch) == 16 for batch in plan[:-1])
    with SlidePyramid(pyramid) as reader:
        tiles = p._Tiles(grid.readers.get(pyramid), grid.level, budget=0)  # 8 tiles kept: evictions
        for indexes in [*plan, np.arange(len(grid))[::-3]]:
            pixels, tissue = grid.read_batch(indexes, tiles)
            for patch, flag, index in zip(pixels, tissue, indexes, strict=True):
                plain = p.read_patch(reader, grid.centres[index], grid.side, spec)
                assert np.array_equal(patch, plain)
                assert flag == p.is_tissue(plain)
    read = list(grid.batches(16))
    assert sorted(i for _, indexes, _ in read for i in indexes.tolist()) == list(range(len(grid)))
    assert read[0][0].shape == (16, size, size, 3) and read[0][0].dtype == torch.uint8


def predictions(pyramid, workers):
    """Batched and plain probabilities of one network (a module function: a pool process runs it)."""
    import torch

    from pathology.ai import networks
    from pathology.ai.training import predict_patches

    torch.manual_seed(0)
    model = networks.scripted(networks.build("patchnet", 3))
    spec = p.PatchSpec(microns=50, input_size=32, mean=SPEC.mean, std=SPEC.std)
    grid = p.GridPatches(pyramid, 0.25, spec)
    found, tissue = predict_patches(model, grid, batch_size=16, workers=workers)
    with torch.no_grad():
        inputs = torch.stack([grid[i][0] for i in range(len(grid))])
        plain = torch.softmax(model(inputs), dim=1).numpy()
    flags = np.array([grid[i][2] for i in range(len(grid))])
    return found, tissue, plain, flags


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_inference_gives_the_probabilities_of_the_plain_path(pyramid, workers):
    found, tissue, plain, flags = predictions(pyramid, workers)
    assert found.shape == plain.shape and len(found) > 50
    np.testing.assert_allclose(found, plain, atol=1e-5)
    assert np.array_equal(tissue, flags) and tissue.any() and not tissue.all()


def predictions_in_pool(pyramid):
    import torch

    # This test process ran torch's threads before the pool forked; a Celery worker's parent
    # never does, but here the copy of its thread pool would hang the child: one thread.
    torch.set_num_threads(1)
    return predictions(pyramid, 2)


def test_loader_processes_start_in_a_celery_pool_process(pyramid):
    """A Celery worker's pool processes are daemonic; loader processes start there all the same."""
    import billiard

    with billiard.Pool(1) as pool:
        found, _, plain, _ = pool.apply_async(predictions_in_pool, (pyramid,)).get(timeout=120)
    np.testing.assert_allclose(found, plain, atol=1e-5)
