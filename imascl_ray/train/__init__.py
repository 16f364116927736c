"""The Ray layer of training: a ``TorchTrainer`` whose workers run :mod:`imascl_ray.engine.loop`."""
