"""Shrinkage of the network's correction to the first guess, fitted on training batches after training.

In residual units the denoiser's x0 estimate is ``sqrt(abar) r_t + sqrt(1 - abar) * alpha * F`` (see
``DepthDifModule.denoise``): ``F`` is the network's output and ``alpha`` in [0, 2] the least-squares factor
that makes the scaled correction best predict the residual on training batches, per timestep bin, per
band and per class of the patch's hidden fraction. Where the network has learned nothing that holds (a
densely observed patch, where the cokriging first guess is already within a few hundredths of a degree),
``alpha`` goes to 0 and the model falls back on its first guess's Gaussian posterior instead of adding
the network's error; where the correction predicts the residual, ``alpha`` stays near 1 (above 1 where it
is too timid).

Why: trained on CPU for a few hundred steps, the network's x0 estimate from pure noise was 1-2 % *worse*
than its own first guess at 50-75 % hidden, on training patches as on validation ones (docs/model-quality.md
sections 3-8): the network cannot output exactly zero where there is nothing to add. Fitting one
least-squares gain per cell is the regression calibration of a forecast's anomaly (the "regression
estimator" of Murphy 1988, "Skill scores based on the mean square error and their relationships to the
correlation coefficient", Mon. Wea. Rev. 116) applied to the network's correction; the cells are coarse
(50 timestep bins x 5 hidden-fraction classes x bands), so the fit itself cannot memorise patches.
"""

from __future__ import annotations

import torch

# as fine as the x0-error table: the gain changes fast near T (measured on a default temp_v1 model: ~0.2-0.5
# at t = 999, from pure noise, but 1.2-1.5 at t = 900-950, where the noisy input still carries the residual)
SHRINKAGE_TIME_BINS = 50
MAX_FACTOR = 2.0  # a gain above 1 makes a too timid correction bolder; bounded so that a few pixels cannot blow up
# classes of a patch's hidden fraction of ocean pixels (per band): the midpoints between the default training
# occlusion levels 0.5 / 0.75 / 0.95 / 0.975, and 0.99 for Argo-like profile sampling (99.7 % hidden)
HIDDEN_FRACTION_EDGES = (0.625, 0.85, 0.9625, 0.99)


def hidden_fraction(valid_mask: torch.Tensor, land_mask: torch.Tensor) -> torch.Tensor:
    """Fraction of each sample's ocean pixels that are not observed, per band.

    Args:
        valid_mask: (B, C, H, W) 1 where observed.
        land_mask: (B, C, H, W) 1 on ocean.

    Returns:
        (B, C) in [0, 1]; 1 for a band without ocean.
    """
    ocean = land_mask.sum(dim=(-2, -1))
    observed = (valid_mask * land_mask).sum(dim=(-2, -1))
    return torch.where(ocean > 0, 1 - observed / ocean.clamp_min(1), torch.ones_like(ocean))


def fraction_class(fraction: torch.Tensor) -> torch.Tensor:
    """Class index (0 .. len(HIDDEN_FRACTION_EDGES)) of hidden fractions of any shape (long tensor)."""
    edges = torch.tensor(HIDDEN_FRACTION_EDGES, dtype=fraction.dtype, device=fraction.device)
    return torch.bucketize(fraction.contiguous(), edges, right=True)


def time_class(timesteps: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """Timestep bin (0 .. SHRINKAGE_TIME_BINS - 1) of training timesteps (B,) (long tensor)."""
    return (timesteps.long() * SHRINKAGE_TIME_BINS // int(num_timesteps)).clamp(0, SHRINKAGE_TIME_BINS - 1)


def shrinkage_factors(table: torch.Tensor, timesteps: torch.Tensor, num_timesteps: int,
                      valid_mask: torch.Tensor, land_mask: torch.Tensor) -> torch.Tensor:
    """The factor each sample's and band's network output is multiplied by.

    Args:
        table: (SHRINKAGE_TIME_BINS, len(HIDDEN_FRACTION_EDGES) + 1, C) fitted factors (1 = unfitted).
        timesteps: (B,) training timesteps.
        num_timesteps: T of the training schedule.
        valid_mask, land_mask: (B, C, H, W) of the batch.

    Returns:
        (B, C, 1, 1) factors, the dtype of ``valid_mask``.
    """
    t_bin = time_class(timesteps, num_timesteps).to(table.device)  # (B,)
    f_bin = fraction_class(hidden_fraction(valid_mask, land_mask)).to(table.device)  # (B, C)
    bands = torch.arange(table.shape[-1], device=table.device)
    factors = table[t_bin[:, None], f_bin, bands[None, :]]
    return factors.to(device=valid_mask.device, dtype=valid_mask.dtype)[..., None, None]


class ShrinkageFit:
    """Least-squares sums of the correction's fit, ``alpha = sum(w g e) / sum(w g^2)`` per cell, where ``g`` is
    the scaled network correction ``sqrt(1 - abar) F``, ``e = r - sqrt(abar) r_t`` what it should predict, and
    ``w`` the first guess's posterior variance in °C² (so that the fit minimises the squared error in °C, the
    scores' units).

    Args:
        num_bands: C.
    """

    def __init__(self, num_bands: int):
        shape = (SHRINKAGE_TIME_BINS, len(HIDDEN_FRACTION_EDGES) + 1, int(num_bands))
        self.cross = torch.zeros(shape, dtype=torch.float64)
        self.power = torch.zeros(shape, dtype=torch.float64)
        # unweighted sums over the same pixels, for the x0 error with the fitted factors (x0_error)
        self.plain = {name: torch.zeros(shape, dtype=torch.float64) for name in ("target", "cross", "power", "count")}

    def add(self, correction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, timesteps: torch.Tensor,
            num_timesteps: int, valid_mask: torch.Tensor, land_mask: torch.Tensor) -> None:
        """Accumulate one batch.

        Args:
            correction: (B, C, H, W) ``g``, the network's scaled output.
            target: (B, C, H, W) ``e``.
            weight: (B, C, H, W) ``w``, 0 outside the scored pixels.
            timesteps: (B,) training timesteps the batch was noised to.
            num_timesteps: T.
            valid_mask, land_mask: (B, C, H, W) of the batch.
        """
        t_bin = time_class(timesteps, num_timesteps).cpu()
        f_bin = fraction_class(hidden_fraction(valid_mask, land_mask)).cpu()
        bands = torch.arange(f_bin.shape[1])
        index = (t_bin[:, None].expand_as(f_bin), f_bin, bands[None, :].expand_as(f_bin))

        def put(table: torch.Tensor, values: torch.Tensor) -> None:
            table.index_put_(index, values.sum(dim=(-2, -1)).double().cpu(), accumulate=True)

        put(self.cross, weight * correction * target)
        put(self.power, weight * correction**2)
        where = (weight > 0).to(correction.dtype)
        put(self.plain["target"], where * target**2)
        put(self.plain["cross"], where * correction * target)
        put(self.plain["power"], where * correction**2)
        put(self.plain["count"], where)

    def x0_error(self, factors: torch.Tensor) -> torch.Tensor:
        """The mean squared x0 error per timestep bin (pooled over classes and bands, every scored pixel alike)
        of the denoiser with ``factors``: ``e - alpha g`` expanded into the accumulated sums.

        Args:
            factors: (SHRINKAGE_TIME_BINS, classes, C) as :meth:`factors` returns.

        Returns:
            (SHRINKAGE_TIME_BINS,) float64, residual units squared; -1 in a bin without pixels.
        """
        sums = self.plain
        error = sums["target"] - 2 * factors * sums["cross"] + factors**2 * sums["power"]
        count = sums["count"].sum(dim=(1, 2))
        return torch.where(count > 0, error.sum(dim=(1, 2)) / count.clamp_min(1.0), torch.full_like(count, -1.0))

    def factors(self) -> torch.Tensor:
        """The fitted table (SHRINKAGE_TIME_BINS, classes, C), each factor clipped to [0, MAX_FACTOR].

        A cell no training batch reached takes the factor of the nearest fitted hidden-fraction class of the
        same timestep bin and band (e.g. profile sampling, 99.7 % hidden, for a model trained on rectangles),
        or 1 (the network as trained) when the whole row is empty.
        """
        fitted = self.power > 0
        table = torch.where(fitted, (self.cross / self.power.clamp_min(1e-300)).clamp(0.0, MAX_FACTOR),
                            torch.ones_like(self.power))
        classes = torch.arange(table.shape[1])
        for t in range(table.shape[0]):
            for c in range(table.shape[2]):
                have = classes[fitted[t, :, c]]
                if len(have) == 0:
                    continue
                for k in classes[~fitted[t, :, c]]:
                    table[t, k, c] = table[t, have[(have - k).abs().argmin()], c]
        return table
