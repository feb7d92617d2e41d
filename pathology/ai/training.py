"""Training and applying patch classifiers (the work of the training and inference jobs).

- `split_by_patient`: train / validation / test sets, or k folds, of patients – never of patches
  or slides, so no patient's tissue is on both sides.
- `train`: epochs over a patch dataset on the GPU when there is one (mixed precision there), else
  the CPU; loss and accuracy per epoch (train and validation) go to `progress`; a checkpoint after
  every epoch lets a stopped training go on where it was.
- `predict_patches`: class probabilities for every patch of a `GridPatches` dataset.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def split_by_patient(
    patients: Sequence[Hashable], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> tuple[list, list, list]:
    """The patients shuffled (seeded) and cut into train, validation and test by `fractions`;
    each split gets at least one patient while there are enough."""
    unique = sorted(set(patients), key=str)
    random.Random(seed).shuffle(unique)
    total = len(unique)
    counts = [int(round(f * total)) for f in fractions]
    for index in range(3):  # every split some patient, taken from the largest
        if counts[index] == 0 and total >= 3:
            counts[index] = 1
            counts[counts.index(max(counts))] -= 1
    counts[0] = total - counts[1] - counts[2]
    return unique[: counts[0]], unique[counts[0] : counts[0] + counts[1]], unique[counts[0] + counts[1] :]


def folds_by_patient(patients: Sequence[Hashable], k: int, seed: int = 0) -> list[tuple[list, list]]:
    """k-fold cross-validation over patients: (training patients, held-out patients) per fold."""
    unique = sorted(set(patients), key=str)
    if not 2 <= k <= len(unique):
        raise ValueError(f"k must be between 2 and the number of patients ({len(unique)}).")
    random.Random(seed).shuffle(unique)
    folds = [unique[i::k] for i in range(k)]
    return [([p for j, f in enumerate(folds) if j != i for p in f], folds[i]) for i in range(k)]


@dataclass
class TrainingResult:
    device: str
    mixed_precision: bool
    history: list[dict] = field(default_factory=list)  # per epoch: loss, accuracy, val_loss, val_accuracy


def _epoch(model, loader, device, optimiser=None, scaler=None) -> tuple[float, float]:
    import torch

    training = optimiser is not None
    model.train(training)
    loss_sum, correct, seen = 0.0, 0, 0
    loss_of = torch.nn.CrossEntropyLoss()
    with torch.set_grad_enabled(training):
        for inputs, labels in loader:
            inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=scaler is not None):
                outputs = model(inputs)
                loss = loss_of(outputs, labels)
            if training:
                optimiser.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimiser)
                    scaler.update()
                else:
                    loss.backward()
                    optimiser.step()
            loss_sum += float(loss.detach()) * len(labels)
            correct += int((outputs.argmax(1) == labels).sum())
            seen += len(labels)
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def train(
    model,
    training,
    validation=None,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    workers: int = 0,
    device: str | None = None,
    seed: int = 0,
    checkpoint: Path | None = None,
    progress: Callable[[int, dict], None] | None = None,
) -> TrainingResult:
    """Train `model` in place on `training` (a dataset of (input, label)); returns the history."""
    import torch
    from torch.utils.data import DataLoader

    from pathology.ai.patches import children_allowed
    from pathology.ai.registry import device as default_device

    device = device or default_device()
    torch.manual_seed(seed)
    model.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    mixed = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda") if mixed else None
    result = TrainingResult(device=device, mixed_precision=mixed)
    start = 0
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        result.history, start = saved["history"], saved["epoch"] + 1
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(start, epochs):
        if hasattr(training, "epoch"):
            training.epoch = epoch  # other draws each epoch, the same for the same seed
        loader = DataLoader(
            training,
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            generator=generator,
            persistent_workers=False,
            pin_memory=mixed,
        )
        with children_allowed():  # loader processes, also in a Celery worker's (daemonic) pool process
            batches = iter(loader)
        loss, accuracy = _epoch(model, batches, device, optimiser, scaler)
        metrics = {"epoch": epoch + 1, "loss": loss, "accuracy": accuracy}
        if validation is not None:
            val_loader = DataLoader(validation, batch_size=batch_size, num_workers=workers)
            with children_allowed():
                val_batches = iter(val_loader)
            metrics["val_loss"], metrics["val_accuracy"] = _epoch(model, val_batches, device)
        result.history.append(metrics)
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            partial = checkpoint.with_suffix(".partial")
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "epoch": epoch,
                    "history": result.history,
                },
                partial,
            )
            partial.replace(checkpoint)
        if progress is not None:
            progress(epoch + 1, metrics)
    model.eval()
    return result


def predict_patches(
    module, grid, *, batch_size: int = 64, workers: int | None = None, device: str | None = None
):
    """For every patch of a `GridPatches` dataset, in its order: class probabilities
    (len(grid) × classes, numpy) and whether it shows tissue (glass patches are left out of maps
    and votes).

    Batches are read by `workers` loader processes ahead of the network (`GridPatches.batches`:
    a compact part of the slide each, every tile decoded once for all its patches) as uint8, a
    quarter of the bytes of floats to move, and scaled and normalised where the network runs.
    None: as many as the device needs (`patches.loader_workers`). On a GPU the batches come
    page-locked and are copied while the next ones run, and the results are fetched once at the
    end, so the GPU does not wait for the host between batches."""
    import numpy as np
    import torch

    from pathology.ai.patches import loader_workers

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    if workers is None:
        workers = loader_workers(device)
    module.to(device).eval()
    # `patches.to_input`'s (value / 255 - mean) / std as one multiply-add
    mean = torch.tensor(grid.spec.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(grid.spec.std, dtype=torch.float64).view(1, 3, 1, 1)
    scale = (1 / (255 * std)).float().to(device)
    shift = (-mean / std).float().to(device)
    tissue = np.zeros(len(grid), dtype=bool)
    order, found = [], []
    with torch.no_grad():
        for pixels, indexes, shows_tissue in grid.batches(batch_size, workers, pin_memory=cuda):
            inputs = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2)
            inputs = torch.addcmul(
                shift, inputs.to(torch.float32, memory_format=torch.contiguous_format), scale
            )
            found.append(torch.softmax(module(inputs), dim=1).float())
            order.append(indexes.numpy())
            tissue[indexes.numpy()] = shows_tissue.numpy()
    if not found:
        return np.zeros((0, 0), dtype=np.float32), tissue
    probabilities = np.zeros((len(grid), found[0].shape[1]), dtype=np.float32)
    probabilities[np.concatenate(order)] = torch.cat(found).cpu().numpy()
    return probabilities, tissue
