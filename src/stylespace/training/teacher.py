"""A teacher's vectors as training targets: distilling a large model into a small, fast one.

Why: the pre-trained EfficientNet-Lite0 model (``models/default``) gives the better style space, but its
1,536-d vectors and its network cost a CPU service most of its throughput. A compact network trained to
reproduce its vectors keeps much of what it knows (types it never trained on, the order of neighbours) at the
compact network's cost. Each training image's target is the teacher's search vector of its *canonical* view
(the packshot as it is), while the student sees augmented views (crops, mirror, darker, other backdrops...):
so the student learns the teacher's space and, at once, to map a customer's photo onto the packshot's place in it.

The teacher's vectors are reduced to the student's search width (its ``output_dim``, e.g. 256) by a PCA fitted
on the training images' vectors (centred, the top components, then L2-normalised): what the compact network can
hold of the 1,536 dimensions, with the directions in which the catalog varies most kept first. The vectors of a
whole decoded catalog array are cached under the teacher's model id, as every other embedding of an array is
(``stylespace.embeddings.array_vectors``), so building the teacher's index afterwards reads them back.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from stylespace.utils import StylespaceError


@dataclasses.dataclass
class TeacherTargets:
    """Unit target vectors (N, dims) float32 for the N training images, and how they were made.

    Attributes:
        targets: (N, dims) the teacher's vectors of each image, PCA-reduced to ``dims`` and L2-normalised.
        spec / model_id / teacher_dim: the teacher as named, its model id and its own vector width.
        dims: the reduced width (the student's ``output_dim``).
        explained: share of the teacher vectors' variance (over the training images) the ``dims`` components keep.
    """

    targets: np.ndarray
    spec: str
    model_id: str
    teacher_dim: int
    dims: int
    explained: float

    @property
    def record(self) -> dict:
        """What run.json says about the teacher."""
        return {"teacher": self.spec, "model_id": self.model_id, "teacher_dim": self.teacher_dim,
                "target_dim": self.dims, "explained_variance": round(self.explained, 4)}


def load_teacher(spec: str):
    """The trained model ``spec`` names (a shipped name such as ``default``, a run or a model folder)."""
    from stylespace.models import load_model, resolve_model_dir

    return load_model(resolve_model_dir(spec))


def pca_targets(vectors: np.ndarray, fit_rows: np.ndarray, dims: int) -> tuple[np.ndarray, float]:
    """(N, D) vectors -> ((N, dims) unit vectors, explained variance share): centred on the mean of the
    ``fit_rows`` and projected on their ``dims`` principal directions (eigenvectors of their covariance)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    n, d = vectors.shape
    if dims > d:
        raise StylespaceError(f"the student's vectors have {dims} dimensions, more than the teacher's {d}; "
                              "distil into a model whose search vectors are at most as wide as the teacher's")
    fit = vectors[fit_rows]
    if len(fit) < 2:
        raise StylespaceError("distillation needs at least 2 training images to fit the teacher's PCA")
    mean = fit.mean(axis=0)
    covariance = np.cov(fit - mean, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(eigenvalues)[::-1][:dims]
    basis = eigenvectors[:, order]
    explained = float(eigenvalues[order].sum() / max(eigenvalues.sum(), 1e-12))
    projected = (vectors - mean) @ basis
    norms = np.linalg.norm(projected, axis=1, keepdims=True)
    return (projected / np.maximum(norms, 1e-12)).astype(np.float32), explained


def teacher_targets(spec: str, array, ids: list[str], train_rows: np.ndarray, dims: int,
                    student_input_size: tuple[int, int], progress: bool = True,
                    log: Callable[[str], None] = lambda message: None) -> TeacherTargets:
    """The distillation targets of the images ``ids`` of a decoded catalog ``array`` (``data.ImageArray``).

    Args:
        spec: the teacher model (see :func:`load_teacher`).
        array: the catalog's decoded images at the student's input size (the teacher must take the same size:
            both see the same canonical view).
        ids: the item ids, in the order of the training arrays (training and validation rows together).
        train_rows: indices into ``ids`` of the training rows: the PCA is fitted on them alone.
        dims: the target width: the student's ``output_dim``.
        student_input_size: (H, W) of the student's input.
    """
    from stylespace.embeddings import array_vectors
    from stylespace.models import model_id

    teacher = load_teacher(spec)
    if tuple(teacher.config.input_size) != tuple(student_input_size):
        raise StylespaceError(f"teacher {spec!r} takes {teacher.config.input_size[0]}x{teacher.config.input_size[1]} "
                              f"images and the student {student_input_size[0]}x{student_input_size[1]}: distil into "
                              "a student of the teacher's input size (--input-size)")
    log(f"the teacher's vectors ({spec}, model {model_id(teacher)}) of {len(array):,} catalog images "
        "(cached after the first run)")
    vectors = np.asarray(array_vectors(teacher, array, progress=progress))[array.indices(ids)]
    targets, explained = pca_targets(vectors, np.asarray(train_rows), dims)
    log(f"teacher vectors {vectors.shape[1]}-d reduced to {dims}-d targets (PCA on {len(train_rows):,} training "
        f"images keeps {100 * explained:.1f} % of their variance)")
    return TeacherTargets(targets, spec, model_id(teacher), int(vectors.shape[1]), dims, explained)
