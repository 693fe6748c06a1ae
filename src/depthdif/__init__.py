"""DepthDif: reconstruct dense subsurface ocean temperature from sparse observations."""

__version__ = "0.1.0"
