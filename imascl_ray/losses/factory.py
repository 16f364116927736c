"""The one place a loss is built from the config: ``loss.name`` picks the class, the rest its settings."""

from __future__ import annotations

from imascl_ray.config import LossConfig
from imascl_ray.losses.base import Loss
from imascl_ray.losses.contrastive import HardNegativesLoss, InfoNCELoss, SoftContrastiveLoss
from imascl_ray.losses.mse import EmbeddingMSELoss

LOSSES: dict[str, type[Loss]] = {
    "soft": SoftContrastiveLoss,
    "infonce": InfoNCELoss,
    "mse": EmbeddingMSELoss,
    "hard_negatives": HardNegativesLoss,
}
"""``loss.name`` -> its class."""


def build_loss(config: LossConfig) -> Loss:
    """The loss ``config`` names, with its temperatures, TMS weight, margin and form.

    ``loss.tms`` turns ``loss.lam`` on (``lam * L_cross + L_mono``) for the contrastive losses; ``mse``
    has no settings. ``loss.labels``, ``loss.teacher_tau`` and ``loss.hard_mix`` are the soft loss's
    (the others ignore them, so one sweep can search them beside ``loss.name``).
    """
    if config.name not in LOSSES:
        raise ValueError(f"unknown loss {config.name!r}; expected one of {', '.join(LOSSES)}")
    if config.name == "mse":
        return EmbeddingMSELoss()
    contrastive = {
        "tau": config.tau,
        "lam": config.lam if config.tms else None,
        "margin": config.margin,
        "local": config.local,
    }
    if config.name == "soft":
        return SoftContrastiveLoss(
            config.labels, teacher_tau=config.teacher_tau, hard_mix=config.hard_mix, **contrastive
        )
    return LOSSES[config.name](**contrastive)
