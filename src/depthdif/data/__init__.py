"""From exported patches to training and evaluation samples: ``index`` (the patch index and the patch files it
points to), ``masking`` (the observing systems: rectangles and profiles), ``normalization`` (°C <-> the model's
z-score), ``augment`` (rot90/flip, EO speckle), ``dataset`` (``PatchDataset``, batches), ``datamodule`` (the
Lightning DataModule of the training stage).

Nothing is imported here, so that ``depthdif.data.index`` stays free of torch.
"""
