"""Correcting a model's Clever Hans (Reveal-to-Revise, Pahde et al. 2023): concept activation vectors
of an artefact (:func:`cav`), P-ClArC (:func:`pclarc`: a projection layer, no training) and A-ClArC
(:func:`aclarc`: fine-tuning with the artefact added in feature space; Anders et al. 2022), and the
measurement before and after (:func:`measure`, :func:`table`) on a planted-shortcut data set
(:func:`shortcut_digits`, :func:`plant_watermark`); Right for the Right Reasons (:mod:`.rrr`: the
input-gradient and the LRP form of the relevance penalty, in the training step).
"""

from __future__ import annotations

from .aclarc import aclarc, upstream_layers
from .cav import CAV, METHODS, POOLINGS, activations, cav, cav_from_channels, cav_from_cluster
from .measure import Measurement, accuracy, measure, relevance_share, table
from .pclarc import pclarc
from .rrr import RRRModel, rrr_fit, rrr_penalty
from .projection import ArtifactAugmentation, ClassArtifactProjection, CorrectionError, insert_after, register
from .shortcut import ShortcutData, add_watermark, plant_watermark, shortcut_digits

register()

__all__ = ["cav", "cav_from_cluster", "cav_from_channels", "CAV", "activations", "pclarc", "aclarc", "measure",
           "relevance_share", "accuracy", "table", "Measurement", "ClassArtifactProjection", "ArtifactAugmentation",
           "insert_after", "shortcut_digits", "add_watermark", "ShortcutData", "CorrectionError", "METHODS",
           "POOLINGS", "RRRModel", "rrr_fit", "rrr_penalty", "plant_watermark", "upstream_layers"]
