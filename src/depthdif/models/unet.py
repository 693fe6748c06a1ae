"""ConvNeXt U-Net that denoises the target bands, conditioned on time, position and season.

The network knows nothing about the diffusion process: it maps (stacked input channels, training
timestep, optional conditioning vectors) to as many output channels as there are target bands. What
those outputs mean (x0 or epsilon) is decided in :mod:`depthdif.models.diffusion`.

Conditioning follows FiLM: the sinusoidal timestep embedding, the unit-sphere position of the patch
centre and the day of year (sin, cos) are each embedded, summed, and turned by every block into a
per-channel scale and shift after its normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from depthdif.errors import DepthDifError


class NetworkConfigError(DepthDifError, ValueError):
    """The network cannot be built or run with the given sizes; the message says which key to change."""


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style embedding of (B,) integer timesteps into (B, dim) features.

    The sinusoidal position encoding of Vaswani et al. (2017, "Attention is all you need"), as DDPM (Ho et al.
    2020) embeds its timesteps: ``[sin(t f_k), cos(t f_k)]`` with ``f_k = max_period^(-k / (dim/2))``.

    Args:
        timesteps: (B,) training timesteps.
        dim: feature width.
        max_period: the longest period, in timesteps.

    Returns:
        (B, dim) float32; an odd ``dim`` ends in a zero column.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:  # odd width: pad one zero column so the shape is what the caller asked for
        emb = F.pad(emb, (0, 1))
    return emb


def coords_to_unit_sphere(coords: torch.Tensor) -> torch.Tensor:
    """Patch centres as points on the unit sphere (continuous across the date line and at the poles).

    Args:
        coords: (B, 2) [latitude, longitude], degrees.

    Returns:
        (B, 3) float32 [cos(lat) cos(lon), cos(lat) sin(lon), sin(lat)].
    """
    lat = torch.deg2rad(coords[:, 0].float())
    lon = torch.deg2rad(coords[:, 1].float())
    return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], dim=1)


_DAYS_BEFORE_MONTH = torch.tensor([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334], dtype=torch.float32)


def date_to_day_of_year(date: torch.Tensor) -> torch.Tensor:
    """Dates as the phase of the seasonal cycle.

    Leap days shift the phase by at most 1/365 of a cycle, which does not matter for a seasonal signal.

    Args:
        date: (B,) (or any shape of B values) YYYYMMDD integers; month and day are clamped to 1-12 and 1-31.

    Returns:
        (B, 2) float32 [sin, cos] of ``2 pi doy / 365.25`` (doy = 0 on 1 January).
    """
    date = date.reshape(-1).long()
    month = ((date // 100) % 100).clamp(1, 12)
    day = (date % 100).clamp(1, 31)
    doy = _DAYS_BEFORE_MONTH.to(date.device)[month - 1] + day.float() - 1.0
    phase = 2 * math.pi * doy / 365.25
    return torch.stack([torch.sin(phase), torch.cos(phase)], dim=1)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022) with FiLM: dw7x7 -> norm -> scale/shift -> 1x1 up -> GELU -> 1x1 down.

    GroupNorm(1, C) normalises over channels and space, the conv-friendly stand-in for LayerNorm that
    does not depend on the batch (so EMA weights and tiny batches behave the same). FiLM is Perez et al.
    (2018, "FiLM: visual reasoning with a general conditioning layer", AAAI); its last layer starts at zero
    (scale 1, shift 0).

    Args:
        dim_in: input channels.
        dim_out: output channels (a 1x1 conv on the skip path when they differ).
        cond_dim: width of the conditioning vector.
        expansion: width factor of the 1x1 bottleneck (``dim_out * expansion`` channels).
    """

    def __init__(self, dim_in: int, dim_out: int, cond_dim: int, expansion: int = 2):
        super().__init__()
        self.dwconv = nn.Conv2d(dim_in, dim_in, kernel_size=7, padding=3, groups=dim_in)
        self.norm = nn.GroupNorm(1, dim_in)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim_in))
        self.pw_up = nn.Conv2d(dim_in, dim_out * expansion, kernel_size=1)
        self.pw_down = nn.Conv2d(dim_out * expansion, dim_out, kernel_size=1)
        self.skip = nn.Conv2d(dim_in, dim_out, kernel_size=1) if dim_in != dim_out else nn.Identity()
        # start as (almost) identity: zero FiLM means scale 1, shift 0
        nn.init.zeros_(self.film[-1].weight)
        nn.init.zeros_(self.film[-1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: (B, dim_in, H, W) features.
            cond: (B, cond_dim) conditioning vector.

        Returns:
            (B, dim_out, H, W) features.
        """
        h = self.norm(self.dwconv(x))
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = h * (1 + scale) + shift
        h = self.pw_down(F.gelu(self.pw_up(h)))
        return h + self.skip(x)


class Downsample(nn.Module):
    """Halve the resolution with a 4x4 convolution of stride 2.

    Args:
        dim_in: input channels.
        dim_out: output channels.
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size=4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the convolution.

        Args:
            x: (B, dim_in, H, W) features, H and W even.

        Returns:
            (B, dim_out, H / 2, W / 2) features.
        """
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling then a 3x3 conv (no checkerboard artefacts of transposed convs; Odena et al.
    2016, "Deconvolution and checkerboard artifacts", Distill).

    Args:
        dim_in: input channels.
        dim_out: output channels.
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample and convolve.

        Args:
            x: (B, dim_in, H, W) features.

        Returns:
            (B, dim_out, 2 H, 2 W) features.
        """
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ConvNeXtUNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) of ConvNeXt blocks (Liu et al. 2022, "A ConvNet for the 2020s", CVPR).

    Args:
        in_channels: stacked input channels (noisy target + conditions), see ``module.input_channels``.
        out_channels: number of target bands C.
        dim: width of the first level; level i has ``dim * dim_mults[i]`` channels.
        dim_mults: one multiplier per resolution level; the patch side must divide by 2**(levels-1).
        blocks_per_level: ConvNeXt blocks per level on the way down (one more on the way up).
        expansion: width factor of the 1x1 bottleneck inside each block.
        coords_features: size of the optional position FiLM input (3 for :func:`coords_to_unit_sphere`; 0 = not
            used).
        doy_features: size of the optional season FiLM input (2 for :func:`date_to_day_of_year`; 0 = not used).

    Raises:
        NetworkConfigError: ``dim_mults`` is empty.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int = 16,
        dim_mults: Sequence[int] = (1, 2, 2),
        blocks_per_level: int = 1,
        expansion: int = 2,
        coords_features: int = 0,
        doy_features: int = 0,
    ):
        super().__init__()
        if not dim_mults:
            raise NetworkConfigError("model.dim_mults is empty: give at least one level, e.g. [1, 2, 2].")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_levels = len(dim_mults)
        cond_dim = 4 * dim
        self.time_dim = dim
        self.time_mlp = nn.Sequential(nn.Linear(dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.coords_mlp = self._cond_mlp(coords_features, cond_dim)
        self.doy_mlp = self._cond_mlp(doy_features, cond_dim)

        widths = [dim * m for m in dim_mults]
        self.init_conv = nn.Conv2d(in_channels, dim, kernel_size=3, padding=1)
        self.down = nn.ModuleList()
        width_in = dim
        for level, width in enumerate(widths):
            blocks = nn.ModuleList(
                [ConvNeXtBlock(width_in if i == 0 else width, width, cond_dim, expansion) for i in range(blocks_per_level)]
            )
            is_last = level == self.num_levels - 1
            down = nn.Identity() if is_last else Downsample(width, width)
            self.down.append(nn.ModuleList([blocks, down]))
            width_in = width

        self.mid = nn.ModuleList([ConvNeXtBlock(widths[-1], widths[-1], cond_dim, expansion) for _ in range(2)])

        self.up = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            width = widths[level]
            # first block takes the skip of this level concatenated in
            blocks = nn.ModuleList(
                [ConvNeXtBlock((width_in + width) if i == 0 else width, width, cond_dim, expansion)
                 for i in range(blocks_per_level + 1)]
            )
            up = Upsample(width, widths[level - 1]) if level > 0 else nn.Identity()
            self.up.append(nn.ModuleList([blocks, up]))
            width_in = widths[level - 1] if level > 0 else width

        self.final_norm = nn.GroupNorm(1, dim)
        self.final_conv = nn.Conv2d(dim, out_channels, kernel_size=1)
        # zero output at initialisation: the first prediction is the climatological mean (z = 0),
        # which keeps the first steps' loss small and stable
        nn.init.zeros_(self.final_conv.weight)
        nn.init.zeros_(self.final_conv.bias)

    @staticmethod
    def _cond_mlp(features: int, cond_dim: int) -> nn.Module | None:
        if features <= 0:
            return None
        return nn.Sequential(nn.Linear(features, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    @property
    def size_multiple(self) -> int:
        """Patch sides must be a multiple of this (one halving per level below the top)."""
        return 2 ** (self.num_levels - 1)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        coords_features: torch.Tensor | None = None,
        doy_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise one batch.

        Args:
            x: (B, in_channels, H, W) the stacked input (noisy target and conditions, working units).
            timesteps: (B,) TRAINING timesteps in [0, T).
            coords_features: (B, coords_features) position features, or None when not used.
            doy_features: (B, doy_features) day-of-year features, or None when not used.

        Returns:
            (B, out_channels, H, W) network output (x0 or noise, see :mod:`depthdif.models.diffusion`).

        Raises:
            NetworkConfigError: another number of input channels than the network was built for, a patch side
                that is not a multiple of :attr:`size_multiple`, or a FiLM input the network needs is None.
        """

        if x.shape[1] != self.in_channels:
            raise NetworkConfigError(
                f"network built for {self.in_channels} input channels got {x.shape[1]}: the batch does not "
                "match the variant / dataset.first_guess the model was built with."
            )
        height, width = x.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise NetworkConfigError(
                f"patch {height}x{width} is not a multiple of {self.size_multiple} "
                f"(2**(len(model.dim_mults)-1)); change export.patch_size or use fewer model.dim_mults."
            )
        cond = self.time_mlp(sinusoidal_embedding(timesteps, self.time_dim).to(x.dtype))
        cond = cond + self._embed(self.coords_mlp, coords_features, "coords", cond)
        cond = cond + self._embed(self.doy_mlp, doy_features, "day of year", cond)

        h = self.init_conv(x)
        skips = []
        for blocks, down in self.down:
            for block in blocks:
                h = block(h, cond)
            skips.append(h)
            h = down(h)
        for block in self.mid:
            h = block(h, cond)
        for blocks, up in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, cond)
            h = up(h)
        return self.final_conv(F.gelu(self.final_norm(h)))

    @staticmethod
    def _embed(mlp: nn.Module | None, features: torch.Tensor | None, name: str, like: torch.Tensor):
        if mlp is None:
            return torch.zeros_like(like)
        if features is None:
            raise NetworkConfigError(
                f"the network was built with {name} conditioning but the batch has none: set "
                f"dataset.return_coords (coords) or turn off model.film_coords / model.film_day_of_year."
            )
        return mlp(features.to(like.dtype))
