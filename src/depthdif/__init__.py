"""DepthDif: reconstruct dense subsurface ocean temperature from sparse observations.

``depthdif.reconstruct(profiles, surface, model, ...)`` (see :func:`depthdif.profiles_io.reconstruct`) is
loaded on first use, so that ``import depthdif`` stays light (no torch, no xarray).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy public API: ``depthdif.reconstruct`` imports the (callable) module ``depthdif.reconstruct``."""
    if name == "reconstruct":
        import importlib

        return importlib.import_module("depthdif.reconstruct")
    raise AttributeError(f"module 'depthdif' has no attribute {name!r}")
