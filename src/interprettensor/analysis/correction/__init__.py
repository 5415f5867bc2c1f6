"""Correcting a model that relies on a shortcut (``it.correction``): Right for the Right Reasons
(:mod:`.rrr`, the input-gradient and the LRP form of the penalty)."""

from .rrr import RRRModel, artifact_share, plant_watermark, rrr_fit, rrr_penalty

__all__ = ["RRRModel", "rrr_fit", "rrr_penalty", "artifact_share", "plant_watermark"]
