"""Zero-shot classes: an article type named only in words gets a text prototype in the image space, and an
image goes to the class whose prototype it is closest to (no support image needed)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from stylespace.text.phrases import singular


def text_prototypes(text_model, class_names: Sequence[str]) -> np.ndarray:
    """(C, D) unit vectors: per class, the mean of its name as written and in the singular ("Tunics", "tunic")."""
    names = [str(n) for n in class_names]
    vectors = text_model.encode([form for name in names for form in (name, singular(name))])
    prototypes = vectors.reshape(len(names), 2, -1).mean(1)
    return (prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)


def zero_shot_classify(text_model, image_vectors: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """The class of each image vector (N, D) (the image model's unit embeddings) by its nearest text prototype."""
    prototypes = text_prototypes(text_model, class_names)
    best = np.argmax(np.asarray(image_vectors, dtype=np.float32) @ prototypes.T, axis=1)
    return [class_names[int(i)] for i in best]
