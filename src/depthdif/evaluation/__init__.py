"""Scoring, the evaluation stages: ``protocol`` (``run_evaluation``: the model and the baselines on every pass,
metrics.csv/json, figures), ``passes`` (the passes and the val items they score), ``baseline_predictions``
(the non-model methods' predictions, computed, stored and scored), ``metrics`` (the scores), ``spectra``
(power spectra, effective resolution), ``plots`` (figures), ``real_sample`` (the real GLORYS12 sample through
the same stages).

Nothing is imported here: the Snakefile imports ``depthdif.evaluation.real_sample`` at parse time, without torch.
"""
