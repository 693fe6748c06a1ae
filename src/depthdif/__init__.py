"""DepthDif: reconstruct dense subsurface ocean temperature from sparse observations.

The public function :func:`reconstruct` (``depthdif.reconstruct(profiles, surface, model, ...)``) imports its
machinery on first call, so that ``import depthdif`` stays light (no torch, no xarray).
"""

__version__ = "0.1.0"


def reconstruct(profiles, surface=None, model=None, **options):
    """A trained model applied to profiles (and a surface field) -> an ``xr.Dataset``.

    The profiles are binned onto a grid (``grid=``, else the surface field's), averaged per cell and model
    depth, and the model's ensemble fills the rest of the ocean; this is
    :func:`depthdif.reconstruction.profiles.reconstruct`, imported on first call.

    Args:
        profiles: a profile NetCDF (``N_PROF x N_LEVELS``: Argo, EN4) or CSV path, such an ``xr.Dataset``, or a
            pandas table of profile levels; temperatures in °C (or any unit the file declares), depth in m or
            pressure in dbar.
        surface: the surface (EO) temperature field for an eo_4band model (path, ``xr.Dataset`` or
            ``xr.DataArray`` on latitude, longitude); None for temp_v1.
        model: model.ckpt (path) or a loaded ``DepthDifModule``; required.
        **options: ``grid`` (path or ``xr.Dataset``), ``date`` (YYYYMMDD), ``ensemble_size`` (default 8),
            ``steps`` (default 25), ``seed`` (default 0), ``fill_values``, ``device`` (default ``auto``); see
            :func:`depthdif.reconstruction.profiles.reconstruct`.

    Returns:
        CF dataset (time=1, depth=C, latitude, longitude): ``thetao`` (ensemble mean, °C), ``thetao_std``
        (°C), ``observation_mask``, ``observation_count``, ``ocean_mask``; profile counts in the attributes
        ``profiles_*``.

    Raises:
        ReconstructionError: no model, no grid, no date, or no usable profile (the message says what to give).
        FieldFileError: a profile, grid or surface file cannot be read as CF says.
        CheckpointError: the model file is missing or not a DepthDif model.ckpt.
    """

    from depthdif.reconstruction.profiles import reconstruct as _reconstruct

    return _reconstruct(profiles, surface, model, **options)
