"""The built-in data set: scikit-learn's bundled digits (8x8 grey images, 10 classes, 1797 images).

Nothing is downloaded: ``sklearn.datasets.load_digits`` reads a CSV shipped inside
scikit-learn. The split is fixed (stratified, seeded), images are scaled to [0, 1]
(pixel / 16) and then standardized with the *training* split's scalar mean and standard
deviation, x = (p / 16 - mean) / std, and shaped [N, 1, 8, 8] float32 (NCHW, one channel).
Labels are int64. Every loader yields ``(images, labels)`` batches.

    >>> from lowbit.compress.data import load_digits_split, digits_loaders
    >>> d = load_digits_split()
    >>> d.x_train.shape, d.x_test.shape
    (torch.Size([1347, 1, 8, 8]), torch.Size([450, 1, 8, 8]))
    >>> train_loader, test_loader = digits_loaders(batch_size=64, seed=0)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DigitsData", "load_digits_split", "digits_loaders", "calibration_subset",
           "calibration_loader", "DIGITS_SPLIT_SEED", "DIGITS_TEST_FRACTION", "NUM_CLASSES"]

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25
NUM_CLASSES = 10
PIXEL_MAX = 16.0  # digits pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap)


@dataclass(frozen=True)
class DigitsData:
    """The fixed split as tensors: images [N, 1, 8, 8] float32, labels [N] int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float  # of the training pixels after / 16
    std: float

    def normalize(self, pixels) -> torch.Tensor:
        """Raw digits pixels (0..16, any shape with 64 values per image) -> model input."""
        p = torch.as_tensor(np.asarray(pixels, dtype=np.float32)).reshape(-1, 1, 8, 8)
        return (p / PIXEL_MAX - self.mean) / self.std


def _check_seed(seed) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    return int(seed)


@lru_cache(maxsize=4)
def _split(seed: int, test_fraction: float) -> DigitsData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float32) / PIXEL_MAX
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y,
                                              random_state=seed)
    mean = float(x_tr.mean())
    std = float(x_tr.std())

    def tensor(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(((a - mean) / std).astype(np.float32).reshape(-1, 1, 8, 8))
        t.requires_grad_(False)
        return t

    return DigitsData(tensor(x_tr), torch.from_numpy(y_tr), tensor(x_te), torch.from_numpy(y_te),
                      mean, std)


def load_digits_split(seed: int = DIGITS_SPLIT_SEED,
                      test_fraction: float = DIGITS_TEST_FRACTION) -> DigitsData:
    """The digits train/test split (stratified by class, ``seed`` fixes it), normalized.

    Args:
        seed: the split's random state (default 0: the split every built-in result uses).
        test_fraction: share of images held out for testing, in (0, 1) (default 0.25:
            1347 train / 450 test images).

    The tensors are shared between calls (cached): do not modify them in place.
    """
    seed = _check_seed(seed)
    if not isinstance(test_fraction, float) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: must be a float in (0, 1), got {test_fraction!r}")
    return _split(seed, test_fraction)


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool,
            seed: int) -> DataLoader:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=gen, num_workers=0)


def digits_loaders(batch_size: int = 64, *, seed: int = 0,
                   split_seed: int = DIGITS_SPLIT_SEED) -> tuple[DataLoader, DataLoader]:
    """(train_loader, test_loader) over the fixed split.

    The train loader reshuffles every epoch from its own ``torch.Generator`` seeded with
    ``seed`` (the global RNG is not used, so the order is reproducible whatever else ran);
    the test loader keeps the split's order.
    """
    seed = _check_seed(seed)
    d = load_digits_split(split_seed)
    return (_loader(d.x_train, d.y_train, batch_size, True, seed),
            _loader(d.x_test, d.y_test, batch_size, False, 0))


def calibration_subset(n: int = 256, *, seed: int = 0,
                       split_seed: int = DIGITS_SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training images (and labels) for calibration, the same share of every class.

    Drawn from the training split only (never the test split), without replacement, by a
    stratified draw seeded with ``seed``: (images [n, 1, 8, 8], labels [n]).
    """
    seed = _check_seed(seed)
    d = load_digits_split(split_seed)
    total = len(d.y_train)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= total:
        raise ValueError(f"n: must be an integer in 1..{total} (the training split), got {n!r}")
    if n == total:
        return d.x_train, d.y_train
    from sklearn.model_selection import train_test_split

    labels = d.y_train.numpy()
    # stratification needs at least one image per class on each side
    stratify = labels if NUM_CLASSES <= n <= total - NUM_CLASSES else None
    idx, _ = train_test_split(np.arange(total), train_size=n, stratify=stratify,
                              random_state=seed)
    idx = torch.from_numpy(np.sort(idx))
    return d.x_train[idx], d.y_train[idx]


def calibration_loader(n: int = 256, batch_size: int = 64, *, seed: int = 0,
                       split_seed: int = DIGITS_SPLIT_SEED) -> DataLoader:
    """``calibration_subset`` as a DataLoader of ``(images, labels)`` batches, fixed order."""
    x, y = calibration_subset(n, seed=seed, split_seed=split_seed)
    return _loader(x, y, batch_size, False, 0)
