"""Augmentation and surface degradation: the rot90/flip turns and the EO band's satellite-like speckle.

A sample is turned by one of the 8 rot90/flip orientations of its last two axes (``code`` 0..7: ``code & 4``
transposes, ``& 2`` flips the rows, ``& 1`` the columns), the same one for its data, observations, masks,
surface fields and first guess. :class:`~depthdif.data.dataset.PatchDataset` turns numpy patches on the CPU
(:func:`dihedral`); the DataModule instead turns whole collated batches on the training device
(:func:`augment_batch`), with the codes meaning the same thing. The training EO band is degraded like a
satellite product: an offset uniform in ``[-EO_OFFSET_MAX_C, EO_OFFSET_MAX_C]`` °C (drawn by the dataset) and
multiplicative speckle (:func:`speckle_factors`; :class:`SpeckleBank` serves pre-drawn factors when training
masks are reused).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

EO_OFFSET_MAX_C = 2.0  # EO degradation: a uniform offset in [-2, 2] °C over the ocean of a patch
EO_SPECKLE_STD = 0.01  # multiplicative speckle 1 + 0.01 * N(0, 1) ...
EO_SPECKLE_CLIP = (0.9, 1.1)  # ... clamped to [0.9, 1.1]


def speckle_factors(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Multiplicative EO speckle: ``1 + 0.01 N(0, 1)`` clamped to [0.9, 1.1], float32."""
    factors = rng.standard_normal(shape, dtype=np.float32)
    factors *= EO_SPECKLE_STD
    factors += 1.0
    return np.clip(factors, *EO_SPECKLE_CLIP, out=factors)


class SpeckleBank:
    """Pre-drawn speckle factors; a sample takes a slice at a random offset (16k normals cost more than the
    rest of a sample). Each value is used about ``reuse`` times (in other pixels) before the bank is redrawn.
    """

    SIZE = 1 << 21  # 8 MB of float32

    def __init__(self, rng: np.random.Generator, reuse: int):
        self.reuse, self.values, self.taken = reuse, speckle_factors(rng, (self.SIZE,)), 0

    def take(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        n = math.prod(shape)
        if n > self.SIZE // 4:
            return speckle_factors(rng, shape)
        if self.taken >= self.reuse * self.SIZE:
            self.values, self.taken = speckle_factors(rng, (self.SIZE,)), 0
        self.taken += n
        start = int(rng.integers(self.SIZE - n + 1))
        return self.values[start : start + n].reshape(shape)


def dihedral(array: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 rot90/flip orientations of (C, H, W) over its last two axes (a view).

    The masks are drawn after this (their distribution is rot90/flip-invariant: sides are i.i.d.), so data,
    valid and land masks share the orientation. The patch-centre coordinates are not rotated with it: they
    describe where the patch is, not its orientation.
    """
    if code & 4:
        array = array.transpose(0, 2, 1)
    if code & 2:
        array = array[:, ::-1]
    if code & 1:
        array = array[:, :, ::-1]
    return array


AUGMENTED_KEYS = ("y", "x", "valid_mask", "land_mask", "eo", "surface", "first_guess")


def augment_batch(batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
    """Turn each sample of a collated batch by its own random rot90/flip, on the batch's device, in place.

    The same orientation for a sample's data, observations, valid and land masks, EO and first guess (the
    keys in ``AUGMENTED_KEYS``); ``coords`` keep the patch centre and ``date``/``info`` stay. The masks were
    drawn before the turn, which gives the same distribution as drawing them after (the rectangle process
    is rot90/flip-invariant). Codes mean what they mean in the dataset's own CPU augmentation.
    """
    y = batch["y"]
    square = y.shape[-1] == y.shape[-2]
    codes = torch.randint(8 if square else 4, (y.shape[0],), generator=generator)
    for code in codes.unique().tolist():
        if code == 0:
            continue
        chosen = (codes == code).nonzero().flatten().to(y.device)
        for key in AUGMENTED_KEYS:
            if key in batch:
                tensor = batch[key]
                tensor[chosen] = _dihedral_tensor(tensor[chosen], code)
    return batch


def _dihedral_tensor(tensor: torch.Tensor, code: int) -> torch.Tensor:
    """:func:`dihedral` for torch tensors (..., H, W), as a new tensor."""
    if code & 4:
        tensor = tensor.transpose(-1, -2)
    if code & 2:
        tensor = tensor.flip(-2)
    if code & 1:
        tensor = tensor.flip(-1)
    return tensor.contiguous()
