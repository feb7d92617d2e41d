"""Training a built-in network on slides of two clearly different textures: splits by patient,
≥ 90 % patch accuracy on held-out slides, a slide half one texture and half the other is
predicted as such; checkpoints let a training go on; GPU or CPU is chosen by itself."""

from __future__ import annotations

import numpy as np
import pytest

from pathology.ai import networks, patches, training
from pathology.builder import PyramidOptions, build_slide_pyramid
from pathology.pyramid import SlidePyramid
from pathology.sources import open_slide_source
from pathology.synthetic import Blob, write_slide

SPEC = patches.PatchSpec(microns=64, input_size=32, mean=(0.75, 0.65, 0.75), std=(0.2, 0.2, 0.2))
MPP = 0.5


def make_pyramid(folder, name, blobs, seed):
    source = write_slide(folder / f"{name}.tif", 1536, 1024, blobs, mpp=MPP, seed=seed)
    target = folder / f"{name}.pyramid"
    build_slide_pyramid(open_slide_source(source), target, PyramidOptions(tile_size=256))
    return str(target)


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("training")
    made = {}
    for number, patient in enumerate(["A", "B", "C", "D", "E", "F"]):
        texture = 0 if patient in "ABC" else 1
        blobs = [
            Blob(500 + 60 * number, 500, 380, 330, texture),
            Blob(1150, 600 - 40 * number, 260, 300, texture),
        ]
        made[patient] = (make_pyramid(folder, patient, blobs, seed=number + 2), texture)
    made["half"] = (
        make_pyramid(folder, "half", [Blob(420, 512, 360, 420, 0), Blob(1120, 512, 360, 420, 1)], seed=11),
        None,
    )
    return made


def test_splits_never_share_a_patient():
    patients = [f"P{i}" for i in range(20)] * 3  # several slides each
    train, val, test = training.split_by_patient(patients, seed=4)
    assert len(train) + len(val) + len(test) == 20 and val and test
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert training.split_by_patient(patients, seed=4) == (train, val, test)
    folds = training.folds_by_patient(patients, 5, seed=1)
    held = [p for _, out in folds for p in out]
    assert sorted(held) == sorted(set(patients)) and all(not set(a) & set(b) for a, b in folds)
    with pytest.raises(ValueError):
        training.folds_by_patient(["one"], 2)


def test_a_small_network_learns_two_textures(slides, tmp_path):
    import torch

    train_items = [patches.SlideItem(slides[p][0], MPP, slides[p][1]) for p in "ABDE"]
    held_out = ["C", "F"]
    dataset = patches.SlidePatches(train_items, SPEC, length=512, seed=1)
    model = networks.build("patchnet", 2)
    epochs_seen = []
    result = training.train(
        model,
        dataset,
        epochs=5,
        batch_size=32,
        learning_rate=3e-3,
        workers=2,
        seed=0,
        checkpoint=tmp_path / "run.ckpt",
        progress=lambda epoch, metrics: epochs_seen.append(epoch),
    )
    assert result.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert result.mixed_precision == torch.cuda.is_available()
    assert epochs_seen == [1, 2, 3, 4, 5] and result.history[-1]["loss"] < result.history[0]["loss"]

    correct = total = 0
    for patient in held_out:
        pyramid, texture = slides[patient]
        grid = patches.GridPatches(pyramid, MPP, SPEC)
        probabilities, tissue = training.predict_patches(networks.scripted(model), grid, workers=2)
        assert tissue.mean() > 0.6  # the grid covers tissue tiles; a few of its cells are glass
        found = probabilities[tissue].argmax(axis=1)
        correct += int((found == texture).sum())
        total += len(found)
    assert total > 50 and correct / total >= 0.9, f"{correct} of {total}"

    # the map of a slide that is half one texture and half the other shows the split
    pyramid, _ = slides["half"]
    grid = patches.GridPatches(pyramid, MPP, SPEC)
    probabilities, tissue = training.predict_patches(model, grid)
    classes = probabilities.argmax(axis=1)[tissue]
    with SlidePyramid(pyramid) as reader:
        middle = reader.width / 2
    xs = np.array([x for x, _ in grid.centres])[tissue]
    assert (classes[xs < middle - 100] == 0).mean() >= 0.9 and (classes[xs > middle + 100] == 1).mean() >= 0.9

    # a training that stopped goes on from its checkpoint
    resumed = networks.build("patchnet", 2)
    more = training.train(
        resumed,
        dataset,
        epochs=6,
        batch_size=32,
        learning_rate=3e-3,
        seed=0,
        checkpoint=tmp_path / "run.ckpt",
    )
    assert [h["epoch"] for h in more.history] == [1, 2, 3, 4, 5, 6]
    assert more.history[:5] == result.history
