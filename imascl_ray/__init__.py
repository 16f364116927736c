"""imascl-ray: soft contrastive learning for multilingual sentence embeddings, at scale with Ray.

The core (``losses``, ``distributed``, ``data``, ``encoder``, ``eval``) is plain PyTorch and knows
nothing of Ray; the Ray layer (``train``, ``tune``) only runs that core on a cluster.
"""

__version__ = "0.1.0"
