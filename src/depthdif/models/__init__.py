"""The conditional diffusion model: network (unet), process (diffusion), samplers, LightningModule."""

from depthdif.models.module import DepthDifModule, load_model, save_model

__all__ = ["DepthDifModule", "load_model", "save_model"]
