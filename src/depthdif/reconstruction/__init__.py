"""Applying a trained model to fields: ``inference`` (batches, ensembles, devices), ``tiling`` and ``stitching``
(a region cut into overlapping patches and blended back), ``gridded`` (``depthdif reconstruct`` on gridded
observation files), ``profiles`` (profile files and ``depthdif.reconstruct``), ``month`` (one exported month
rebuilt over its whole region for the evaluation).
"""
