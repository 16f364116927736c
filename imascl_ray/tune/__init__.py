"""Hyperparameter search: ``tune_spaces/*.yaml`` -> a Ray Tune sweep of training runs.

- :mod:`imascl_ray.tune.space` reads and checks a search-space file (plain Python: no Ray; its YAML
  line numbers in :mod:`~imascl_ray.tune.space_yaml`), giving a
  :class:`~imascl_ray.tune.search_space.SearchSpace`: one Ray Tune domain per searched key, trials that
  are ordinary :class:`~imascl_ray.config.Config`, one validation set over searched pair sets.
- :mod:`imascl_ray.tune.results` turns finished trials into the final table and the best config
  (plain Python).
- :mod:`imascl_ray.tune.trainable` is the Tune function trainable: one trial = one
  :func:`~imascl_ray.train.trainer.run_training` (a ``TorchTrainer``) reporting validation to Tune.
- :mod:`imascl_ray.tune.sweep` builds the ``Tuner`` (the space's param space, searched by
  ``OptunaSearch`` or Tune's grid; ASHA; concurrency from the cluster), resumes a killed sweep, and
  writes the table, the best config and the best model. Its MLflow parent and child runs are
  :mod:`imascl_ray.tracking.sweeps`'.
- :mod:`imascl_ray.tune.placement_groups` frees the placement groups of stopped trials (the one
  private Ray API, pinned and tested); :mod:`imascl_ray.tune.files` writes state files atomically.
"""
