"""The training engine in plain PyTorch: the per-rank loop, precision and the grad scaler, optimiser and
schedule, checkpoint state, guards, hard-negative texts, and the fault hook of the tests.

Nothing here knows Ray; :mod:`imascl_ray.train` runs these pieces inside Ray Train workers.
"""
