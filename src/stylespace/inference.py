"""What runs an embedding model: PyTorch, or ONNX Runtime on the CPU (several times faster there).

>>> embedder = make_embedder(load_model("models/default"), engine="auto")   # ONNX Runtime on a CPU
>>> embedder(pixels).shape                                                   # (N, H, W, 3) uint8 in
(N, 256)

An :class:`Embedder` takes uint8 images (N, H, W, 3) at the model's input size and returns (N, D)
float32 unit vectors, whichever engine runs it:

* :class:`TorchEmbedder`: the model itself, on any device (the only choice on CUDA);
* :class:`OnnxEmbedder`: the same model exported to ONNX (:func:`export_onnx`; the uint8 -> float
  conversion and the channel order are inside the graph) and run by ONNX Runtime on the CPU. Its
  vectors equal PyTorch's to about 1e-6 (tests/test_inference.py).

The ONNX file is made when first needed and kept: beside the model (``<model folder>/model-<model id>.onnx``)
or, where that folder is not writable or there is none, in ``$STYLESPACE_CACHE/onnx/<model id>.onnx``.
It is written atomically and named by, and records, the model id (a hash of the weights), so a file
made for other weights is never used. ``engine="auto"`` picks ONNX Runtime on a CPU when it is
installed and the job pays for the export (about half a second): an ONNX file exists already, the
caller is long-lived (the service), or there are at least :data:`ONNX_MIN_IMAGES` images.

A command chooses the engine for everything it embeds with ``with engine_choice("onnx"): ...`` (the CLI's
``--engine``): :func:`stylespace.embeddings.embed_images` called without an engine uses that choice, so
the library's signatures need no engine argument threaded through them.
"""
from __future__ import annotations

import collections
import dataclasses
import contextlib
import contextvars
import copy
import io
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from stylespace.models.inputs import as_model_input
from stylespace.utils import StylespaceError, atomic_write, cache_root, one_of, pick_device, validate

ENGINES = ("auto", "torch", "onnx")
# Below this many images, exporting (~0.5 s for the default model) costs more than ONNX Runtime saves.
ONNX_MIN_IMAGES = 2048
ONNX_OPSET = 17
MODEL_ID_KEY = "stylespace_model_id"
_SESSIONS: "collections.OrderedDict[str, object]" = collections.OrderedDict()
_SESSIONS_KEPT = 8
_LOCK = threading.Lock()
log = logging.getLogger("stylespace.inference")
_CHOICE: contextvars.ContextVar[str] = contextvars.ContextVar("stylespace_engine", default="auto")


class Embedder(Protocol):
    """uint8 images (N, H, W, 3) -> (N, output_dim) float32 unit vectors."""

    engine: str
    output_dim: int
    input_size: tuple[int, int]

    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...


def check_engine(engine: str) -> str:
    validate([one_of("engine", engine, ENGINES)])
    return engine


@contextlib.contextmanager
def engine_choice(engine: str):
    """Within the block, embedding without an explicit engine uses ``engine`` (``auto``, ``torch``, ``onnx``)."""
    token = _CHOICE.set(check_engine(engine))
    try:
        yield engine
    finally:
        _CHOICE.reset(token)


def chosen_engine() -> str:
    """The engine :func:`engine_choice` set for this context (``auto`` outside any)."""
    return _CHOICE.get()


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def check_pixels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``pixels`` as (N, H, W, 3) uint8 at ``size`` = (H, W), or a StylespaceError saying what is wrong."""
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise StylespaceError(f"expected uint8 images (N, H, W, 3), got {pixels.dtype} {tuple(pixels.shape)}")
    if tuple(pixels.shape[1:3]) != tuple(size):
        raise StylespaceError(f"images are {pixels.shape[1]}x{pixels.shape[2]} but the model takes "
                              f"{size[0]}x{size[1]} (H x W); load them at the model's input size")
    return pixels


class TorchEmbedder:
    """The model run by PyTorch on ``device``, ``batch_size`` images per forward pass."""

    engine = "torch"

    def __init__(self, model, device: str | torch.device = "auto", batch_size: int = 512):
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.model = model.to(self.device).eval()
        self.output_dim = model.output_dim
        self.input_size = tuple(getattr(getattr(model, "config", None), "input_size", ()) or ())
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        out = np.empty((len(pixels), self.output_dim), dtype=np.float32)
        for start in range(0, len(pixels), self.batch_size):
            # a copy: memory maps and PIL's buffers are read-only, which torch will not wrap
            batch = torch.from_numpy(np.array(pixels[start:start + self.batch_size])).to(self.device)
            x = as_model_input(batch).contiguous(memory_format=torch.channels_last)
            out[start:start + len(batch)] = self.model.embed(x).float().cpu().numpy()
        return out


class OnnxEmbedder:
    """The model's ONNX export run by ONNX Runtime on the CPU.

    Args:
        path: an ONNX file written by :func:`export_onnx`.
        model_id: the id the file must record (a file for other weights is refused).
        batch_size: images per run (bounds the memory of one call).
        threads: ONNX Runtime's threads for one run (0 = one per physical core).
    """

    engine = "onnx"

    def __init__(self, path: str | os.PathLike, model_id: str | None = None, batch_size: int = 512,
                 threads: int = 0):
        self.path = Path(path)
        self.session = _session(self.path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if model_id is not None and meta.get(MODEL_ID_KEY) != model_id:
            raise StylespaceError(f"{self.path} was exported from model {meta.get(MODEL_ID_KEY)!r}, not {model_id!r}; "
                                  "export it again (`stylespace export-onnx MODEL`)")
        self.model_id = meta.get(MODEL_ID_KEY)
        shape = self.session.get_inputs()[0].shape
        self.input_size = (int(shape[1]), int(shape[2]))
        self.output_dim = int(self.session.get_outputs()[0].shape[1])
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        out = np.empty((len(pixels), self.output_dim), dtype=np.float32)
        for start in range(0, len(pixels), self.batch_size):
            batch = np.ascontiguousarray(pixels[start:start + self.batch_size])
            out[start:start + len(batch)] = self.session.run(None, {self.input_name: batch})[0]
        return out


class _UintImages(torch.nn.Module):
    """What the ONNX graph computes: uint8 (N, H, W, 3) -> the model's L2-normalised embedding, or with
    ``output="features"`` the pooled backbone features under the head (not normalised)."""

    def __init__(self, model, output: str = "embedding"):
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = as_model_input(pixels)
        return self.model.features(x) if self.output == "features" else self.model.embed(x)


def export_onnx(model, path: str | os.PathLike, output: str = "embedding") -> Path:
    """Export ``model`` (an :class:`~stylespace.models.EmbeddingModel`) to an ONNX file at ``path``,
    atomically, recording its model id; returns ``path``. ``output="features"`` exports the pooled backbone
    features instead of the embedding (training on a frozen backbone computes them once per view)."""
    import onnx

    from stylespace.models import model_id

    path = Path(path)
    exported = copy.deepcopy(model).cpu().eval()
    height, width = tuple(exported.config.input_size)
    example = torch.zeros((2, height, width, 3), dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation notes: the parity test checks the result
        torch.onnx.export(_UintImages(exported, output), (example,), buffer, input_names=["pixels"],
                          output_names=["embedding"], dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False)
    graph = onnx.load_from_string(buffer.getvalue())
    for key, value in ((MODEL_ID_KEY, model_id(model)), ("stylespace_backbone", exported.config.backbone),
                       ("stylespace_output_dim", str(exported.output_dim))):
        graph.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    with atomic_write(path) as handle:
        handle.write(graph.SerializeToString())
    return path


def onnx_path(model, folder: str | os.PathLike | None = None) -> Path:
    """Where the ONNX file of ``model`` lives: beside it in ``folder`` (default: the folder it was loaded
    from) when that folder is writable, else in the cache."""
    from stylespace.models import model_id

    name = model_id(model)
    folder = folder if folder is not None else getattr(model, "folder", None)
    if folder is not None and os.access(folder, os.W_OK):
        return Path(folder) / f"model-{name}.onnx"
    return cache_root() / "onnx" / f"{name}.onnx"


def ensure_onnx(model, folder: str | os.PathLike | None = None) -> Path:
    """The ONNX file of ``model``, exported first when there is none for these weights (see :func:`onnx_path`)."""
    path = onnx_path(model, folder)
    if not path.is_file():
        with _LOCK:
            if not path.is_file():
                export_onnx(model, path)
    return path


def _existing_onnx(model) -> Path | None:
    path = onnx_path(model)
    return path if path.is_file() else None


def resolve_engine(engine: str, device: str | torch.device = "auto", model=None, images: int | None = None) -> str:
    """``torch`` or ``onnx`` for ``engine`` (see the module docstring for what ``auto`` picks); ``images`` is
    how many images the caller will embed (None: a long-lived caller, such as the service)."""
    check_engine(engine)
    target = device if isinstance(device, torch.device) else pick_device(device)
    exportable = model is not None and hasattr(model, "config") and hasattr(model, "embed")
    if engine == "onnx":
        if target.type != "cpu":
            raise StylespaceError(f"the onnx engine runs on the CPU, not {target}; use --engine torch on a GPU")
        if not onnx_available():
            raise StylespaceError("the onnx engine needs onnxruntime (pip install onnxruntime); or use --engine torch")
        if model is not None and not exportable:
            raise StylespaceError(f"{type(model).__name__} cannot be exported to ONNX; use --engine torch")
        return "onnx"
    if engine == "torch" or target.type != "cpu" or not exportable or not onnx_available():
        return "torch"
    if model.training:
        return "torch"  # weights that are still changing: every call would export anew
    if images is None or images >= ONNX_MIN_IMAGES or _existing_onnx(model) is not None:
        return "onnx"
    return "torch"


# Images per run for a network that works at a larger size than its input (a pre-trained one): on a CPU,
# batches of this many network pixels run fastest (EfficientNet-Lite0 at 160 x 120: 64 images), and bigger
# ones only take memory.
NETWORK_PIXELS_PER_BATCH = 64 * 160 * 120


def batch_limit(model) -> int:
    """The most images per forward pass worth giving ``model`` (unbounded for networks at their input size)."""
    size = tuple(getattr(getattr(model, "config", None), "network_size", ()) or ())
    return max(8, NETWORK_PIXELS_PER_BATCH // (size[0] * size[1])) if size else 1 << 30


def make_embedder(model, engine: str | None = None, device: str | torch.device = "auto", images: int | None = None,
                  batch_size: int = 512) -> Embedder:
    """An :class:`Embedder` for ``model`` on ``engine`` (``auto``, ``torch`` or ``onnx``; None: the one
    :func:`engine_choice` set); ``images`` as in :func:`resolve_engine`. The ONNX file is exported first
    when needed (:func:`ensure_onnx`)."""
    from stylespace.models import model_id

    engine = engine or chosen_engine()
    batch_size = min(batch_size, batch_limit(model))
    if resolve_engine(engine, device, model, images) == "torch":
        return TorchEmbedder(model, device, batch_size)
    try:
        path = ensure_onnx(model)
        try:
            return OnnxEmbedder(path, model_id(model), batch_size)
        except StylespaceError:  # a damaged or foreign file under this model's name: made again, once
            export_onnx(model, path)
            return OnnxEmbedder(path, model_id(model), batch_size)
    except Exception as exc:
        if engine == "onnx":
            if isinstance(exc, StylespaceError):
                raise
            raise StylespaceError(f"could not export this model to ONNX ({type(exc).__name__}: {str(exc)[:200]}); "
                                  "use --engine torch") from None
        # auto: a model the exporter cannot take (or a full disk) still embeds, with PyTorch
        log.warning("ONNX Runtime not used for model %s (%s: %s); embedding with PyTorch", model_id(model),
                    type(exc).__name__, str(exc)[:200])
        return TorchEmbedder(model, device, batch_size)


def _session(path: Path, threads: int = 0):
    """One ONNX Runtime session per file and thread count, kept (creating one takes tens of milliseconds)."""
    import onnxruntime as ort

    key = f"{path.resolve()}|{path.stat().st_mtime_ns}|{threads}"
    with _LOCK:
        if key in _SESSIONS:
            _SESSIONS.move_to_end(key)
            return _SESSIONS[key]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # Idle threads that spin wait for the next run take CPU from everything else on a small machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for unreadable files
        raise StylespaceError(f"{path}: not a usable ONNX file ({type(exc).__name__}: {str(exc)[:200]}); "
                              "export it again (`stylespace export-onnx MODEL`)") from None
    with _LOCK:
        _SESSIONS[key] = session
        while len(_SESSIONS) > _SESSIONS_KEPT:
            _SESSIONS.popitem(last=False)
    return session


PARITY_TOLERANCE = 1e-5


@dataclasses.dataclass
class ExportResult:
    """What :func:`export_checked` made and how closely it matches PyTorch."""

    model: str
    model_id: str
    onnx: str
    bytes: int
    images_checked: int
    max_abs_diff: float


def export_checked(model_dir: str | os.PathLike, output: str | os.PathLike | None = None,
                   images: int = 64, seed: int = 0) -> ExportResult:
    """Export the model saved in ``model_dir`` to ONNX (default: beside it, :func:`onnx_path`) and check that
    ONNX Runtime's embeddings of ``images`` generated images equal PyTorch's to :data:`PARITY_TOLERANCE`;
    a file that does not is removed and the export refused."""
    from stylespace.models import load_model, model_id

    model = load_model(model_dir, device="cpu")
    path = Path(output) if output is not None else onnx_path(model, model_dir)
    export_onnx(model, path)
    height, width = tuple(model.config.input_size)
    pixels = np.random.default_rng(seed).integers(0, 256, (images, height, width, 3), dtype=np.uint8)
    try:
        diff = float(np.abs(OnnxEmbedder(path, model_id(model))(pixels) - TorchEmbedder(model, "cpu")(pixels)).max())
    except StylespaceError:
        path.unlink(missing_ok=True)
        raise
    if not diff <= PARITY_TOLERANCE:
        path.unlink(missing_ok=True)
        raise StylespaceError(f"the ONNX export of {model_dir} differs from PyTorch by {diff:.2e} (more than "
                              f"{PARITY_TOLERANCE:g}); not kept: run this model with --engine torch")
    return ExportResult(str(model_dir), model_id(model), str(path), path.stat().st_size, images, diff)
