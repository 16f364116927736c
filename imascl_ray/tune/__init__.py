"""Hyperparameter search: ``tune_spaces/*.yaml`` -> a Ray Tune sweep of training runs.

- :mod:`imascl_ray.tune.space` reads and checks a search-space file (plain Python: no Ray), giving a
  :class:`~imascl_ray.tune.space.SearchSpace` whose trials are ordinary :class:`~imascl_ray.config.Config`.
- :mod:`imascl_ray.tune.results` turns finished trials into the final table and the best config
  (plain Python).
- :mod:`imascl_ray.tune.tracking` holds the sweep's MLflow parent run and its child runs (MLflow only).
- :mod:`imascl_ray.tune.trainable` is the Tune function trainable: one trial = one
  :func:`~imascl_ray.train.trainer.run_training` (a ``TorchTrainer``) reporting validation to Tune.
- :mod:`imascl_ray.tune.sweep` builds the ``Tuner`` (Optuna TPE or grid, ASHA, concurrency from the
  cluster), resumes a killed sweep, and writes the table, the best config and the best model.
"""
