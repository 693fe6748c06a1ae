"""DepthDif: reconstruct dense subsurface ocean temperature from sparse observations.

The public function :func:`reconstruct` (``depthdif.reconstruct(profiles, surface, model, ...)``) imports its
machinery on first call, so that ``import depthdif`` stays light (no torch, no xarray).
"""

__version__ = "0.1.0"


def reconstruct(profiles, surface=None, model=None, **options):
    """A trained model applied to profiles (and a surface field) -> an ``xr.Dataset``.

    See :func:`depthdif.reconstruction.profiles.reconstruct` for the arguments, the returned dataset and the
    errors.
    """
    from depthdif.reconstruction.profiles import reconstruct as _reconstruct

    return _reconstruct(profiles, surface, model, **options)
