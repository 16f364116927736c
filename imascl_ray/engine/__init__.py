"""The training engine's pure-PyTorch parts: precision, optimiser and schedule, checkpoint state, guards.

Nothing here knows Ray; :mod:`imascl_ray.train` runs these pieces inside Ray Train workers.
"""
