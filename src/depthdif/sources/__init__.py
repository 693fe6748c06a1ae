"""Where raw NetCDF months come from: Copernicus Marine, a synthetic ocean, or a local folder."""
