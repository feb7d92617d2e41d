"""The pyramid builder on synthetic slides: levels, sizes, resolution, tissue filters, islands,
region reads against the source (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from pathology.builder import PyramidOptions, build_slide_pyramid, classify_tile
from pathology.pyramid import PyramidError, SlidePyramid, levels_for
from pathology.sources import open_slide_source
from pathology.synthetic import SyntheticSlide
from pathology.tests.conftest import BIG, BLOBS, ISLAND, STRIPES, TILE


def build(path, target, **options):
    source = open_slide_source(path)
    try:
        return build_slide_pyramid(source, target, PyramidOptions(tile_size=TILE, workers=2, **options))
    finally:
        source.close()


def tile_of(x, y):
    return int(x // TILE), int(y // TILE)


def test_levels_dimensions_resolution_and_tissue(slide_files, tmp_path):
    progress = []
    source = open_slide_source(slide_files["generic"])
    result = build_slide_pyramid(
        source,
        tmp_path / "p.pyramid",
        PyramidOptions(tile_size=TILE, workers=2),
        progress=lambda fraction, message: progress.append(fraction),
    )
    assert progress[-1] == 1.0 and progress == sorted(progress)
    assert result.levels == levels_for(3000, 2200, TILE) == 5  # 3000 px padded to 256 · 2^4
    with SlidePyramid(result.path) as pyramid:
        assert (pyramid.width, pyramid.height, pyramid.tile_size, pyramid.level_count) == (
            3000,
            2200,
            TILE,
            5,
        )
        assert pyramid.mpp == (0.25, 0.25)
        assert [lv.columns for lv in pyramid.levels] == [1, 2, 3, 6, 12]
        assert pyramid.tile_count(0) == 1 and pyramid.tile(0, 0, 0) is not None
        tissue = pyramid.tissue_tiles()
        # tiles well inside each blob are kept, whatever their texture …
        for blob in (BIG, STRIPES):
            assert tile_of(blob.cx, blob.cy) in tissue
            assert tile_of(blob.cx - blob.rx / 2, blob.cy) in tissue
        # … glass far from any blob is dropped, and so is the lonely island
        assert (0, 8) not in tissue and (11, 0) not in tissue and (7, 0) not in tissue
        assert tile_of(ISLAND.cx, ISLAND.cy) not in tissue
        assert pyramid.metadata["removed_island_tiles"] >= 1
        assert result.tissue_tiles == len(tissue)
        assert result.tissue_tiles + result.background_tiles + result.removed_island_tiles == 12 * 9
        assert result.background_tiles > result.tissue_tiles / 2
        assert pyramid.metadata["tile_counts"] == [pyramid.tile_count(level) for level in range(5)]
        assert pyramid.image_names() == ["thumbnail"]


def test_islands_are_kept_when_the_setting_allows_them(slide_files, tmp_path):
    result = build(slide_files["generic"], tmp_path / "p.pyramid", min_island_tiles=1)
    with SlidePyramid(result.path) as pyramid:
        assert tile_of(ISLAND.cx, ISLAND.cy) in pyramid.tissue_tiles()
    assert result.removed_island_tiles == 0


def test_the_filters_are_what_drops_tiles(slide_files, tmp_path):
    # With the white filter off and no edges needed, every tile is tissue.
    everything = build(
        slide_files["generic"],
        tmp_path / "a.pyramid",
        max_white_fraction=1.0,
        min_edge_fraction=0.0,
        min_island_tiles=1,
    )
    assert everything.background_tiles == 0 and everything.tissue_tiles == 12 * 9
    # A flat pink region has no edges: the Canny check drops it although it is not white.
    flat = np.full((TILE, TILE, 3), (230, 150, 190), dtype=np.uint8)
    assert classify_tile(flat, PyramidOptions())[0] is False
    textured = SyntheticSlide(TILE, TILE, [type(BIG)(128, 128, 400, 400)]).region(0, 0, TILE, TILE)
    assert classify_tile(textured, PyramidOptions())[0] is True


def test_region_reads_equal_the_source(slide_files, tmp_path):
    result = build(slide_files["generic"], tmp_path / "p.pyramid")
    truth = SyntheticSlide(3000, 2200, BLOBS)
    with SlidePyramid(result.path) as pyramid:
        top = pyramid.level_count - 1
        region = pyramid.read_region(top, 600, 500, 600, 500)  # inside the big blob, across tiles
        assert region.shape == (500, 600, 3) and region.dtype == np.uint8
        expected = truth.region(600, 500, 600, 500)
        assert np.abs(region.astype(int) - expected.astype(int)).mean() < 6  # JPEG twice over
        # one level down: the source halved
        half = pyramid.read_region(top - 1, 300, 250, 300, 250)
        shrunk = expected.reshape(250, 2, 300, 2, 3).mean(axis=(1, 3))
        assert np.abs(half.astype(int) - shrunk).mean() < 8
        # glass that was dropped reads as white; outside the slide too
        assert (pyramid.read_region(top, 0, 2000, 200, 150) == 255).all()
        assert (pyramid.read_region(top, 2900, 2100, 300, 300)[150:, :] == 255).all()
        with pytest.raises(PyramidError):
            pyramid.read_region(7, 0, 0, 10, 10)


def test_aperio_layout_keeps_vendor_data_and_associated_images(slide_files, tmp_path):
    result = build(slide_files["aperio"], tmp_path / "p.pyramid")
    with SlidePyramid(result.path) as pyramid:
        assert pyramid.metadata["vendor"] == "aperio"
        assert pyramid.metadata["objective_power"] == 20
        assert pyramid.mpp == (0.5, 0.5)
        assert pyramid.metadata["properties"]["aperio.AppMag"] == "20"
        assert pyramid.image_names() == ["label", "macro", "thumbnail"]
        assert (pyramid.width, pyramid.height) == (2400, 1800)
        assert tile_of(BIG.cx, BIG.cy) in pyramid.tissue_tiles()


def test_ome_tiff_with_its_resolution(tmp_path):
    """OME-TIFF: a plain (striped) one is read through large-image, a tiled pyramid through
    OpenSlide; both keep the physical pixel size from the OME-XML."""
    import tifffile

    truth = SyntheticSlide(1200, 900, [type(BIG)(600, 450, 400, 300)])
    pixels = truth.region(0, 0, 1200, 900)
    meta = {"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    with tifffile.TiffWriter(tmp_path / "plain.ome.tif", ome=True) as tiff:
        tiff.write(pixels, photometric="rgb", metadata=meta, rowsperstrip=64)
    with tifffile.TiffWriter(tmp_path / "tiled.ome.tif", ome=True) as tiff:
        tiff.write(pixels, photometric="rgb", tile=(256, 256), subifds=1, metadata=meta)
        tiff.write(pixels[::2, ::2], photometric="rgb", tile=(256, 256), subfiletype=1)
    for name, reader in (("plain.ome.tif", "large-image"), ("tiled.ome.tif", "openslide")):
        source = open_slide_source(tmp_path / name)
        assert source.reader.startswith(reader) and source.vendor == "ome-tiff"
        assert (source.mpp_x, source.mpp_y) == (0.5, 0.5)
        assert np.array_equal(source.read(100, 100, 300, 200), pixels[100:300, 100:400])
        result = build_slide_pyramid(
            source, tmp_path / f"{name}.pyramid", PyramidOptions(tile_size=TILE, workers=2)
        )
        source.close()
        with SlidePyramid(result.path) as pyramid:
            assert pyramid.mpp == (0.5, 0.5) and tile_of(600, 450) in pyramid.tissue_tiles()
