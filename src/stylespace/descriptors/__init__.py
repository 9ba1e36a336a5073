"""Feature extractors that are not trained here, and ensembles of extractors (seeds 001 and 002).

Every extractor has ``name``, ``dim`` and ``embed(pixels uint8 (N, H, W, 3)) -> float32 (N, dim)``
L2-normalised, like a trained model, so they all go through the same search and evaluation:

- hand-made descriptors: :class:`ColourHistogram` (HSV), :class:`GaborJets`, :class:`HogDescriptor`,
  and any :class:`Concatenation` of extractors;
- :class:`PretrainedFeatures`: a torchvision CNN, classifier removed, global average pooling, from a
  local weights file; :class:`ModelFeatures`: a trained stylespace model;
- :class:`FeatureEnsemble`: weighted concatenation with SelectKBest, weights chosen on a validation
  split (fit / transform), and :class:`EnsembleExtractor` to run it from pixels.
"""
from stylespace.descriptors.base import BatchedDescriptor, FeatureExtractor, l2_normalise, timed_embed
from stylespace.descriptors.colour import ColourHistogram, ColourHistogramConfig
from stylespace.descriptors.ensemble import (
    Concatenation,
    EnsembleConfig,
    EnsembleExtractor,
    FeatureEnsemble,
    WeightTrial,
    weighted_concat,
)
from stylespace.descriptors.gabor import GaborConfig, GaborJets
from stylespace.descriptors.hog import HogConfig, HogDescriptor
from stylespace.descriptors.networks import ModelFeatures, PretrainedConfig, PretrainedFeatures

__all__ = [
    "BatchedDescriptor", "FeatureExtractor", "l2_normalise", "timed_embed",
    "ColourHistogram", "ColourHistogramConfig", "GaborConfig", "GaborJets", "HogConfig", "HogDescriptor",
    "Concatenation", "EnsembleConfig", "EnsembleExtractor", "FeatureEnsemble", "WeightTrial", "weighted_concat",
    "ModelFeatures", "PretrainedConfig", "PretrainedFeatures",
]
