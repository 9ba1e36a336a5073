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

``precision="int8"`` (``with precision_choice("int8")``, the CLI's ``--precision int8``; off by default) runs the
model's ONNX file quantised to 8-bit integers on ONNX Runtime (:func:`quantize_onnx`: static QDQ, per-channel
int8 weights, uint8 activations calibrated on a fixed, seeded sample of the catalog's own images). Its file
lies beside the fp32 one, ``model-<model id>-int8.onnx`` (or ``$STYLESPACE_CACHE/onnx/<model id>-int8.onnx``),
is made the first time a catalog is embedded at that precision (or by ``stylespace export-onnx MODEL
--precision int8 --catalog CATALOG``), written atomically and records the model id and the precision.
Its vectors are close to fp32's, not equal (``benchmarks/bench_int8.py`` measures how close and what it
costs recall), so the vector cache keeps them apart (:mod:`stylespace.embeddings`).
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
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from stylespace.models.inputs import as_model_input
from stylespace.utils import StylespaceError, atomic_write, cache_root, one_of, pick_device, validate

ENGINES = ("auto", "torch", "onnx")
PRECISIONS = ("fp32", "int8")
# Below this many images, exporting (~0.5 s for the default model) costs more than ONNX Runtime saves.
ONNX_MIN_IMAGES = 2048
ONNX_OPSET = 17
MODEL_ID_KEY = "stylespace_model_id"
PRECISION_KEY = "stylespace_precision"
_SESSIONS: "collections.OrderedDict[str, object]" = collections.OrderedDict()
_SESSIONS_KEPT = 8
_LOCK = threading.Lock()
log = logging.getLogger("stylespace.inference")


class Embedder(Protocol):
    """uint8 images (N, H, W, 3) -> (N, output_dim) float32 unit vectors."""

    engine: str
    precision: str
    output_dim: int
    input_size: tuple[int, int]

    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...


class _Setting:
    """What a command chooses for everything it embeds, held in a context variable and checked against its
    choices: the library's signatures need no argument threaded through them."""

    def __init__(self, name: str, choices: tuple[str, ...], default: str):
        self.name, self.choices = name, choices
        self.variable: contextvars.ContextVar[str] = contextvars.ContextVar(f"stylespace_{name}", default=default)

    def check(self, value: str) -> str:
        validate([one_of(self.name, value, self.choices)])
        return value

    @contextlib.contextmanager
    def chosen(self, value: str):
        token = self.variable.set(self.check(value))
        try:
            yield value
        finally:
            self.variable.reset(token)


_ENGINE = _Setting("engine", ENGINES, "auto")
_PRECISION = _Setting("precision", PRECISIONS, "fp32")
check_engine = _ENGINE.check  # the value, or a StylespaceError naming the setting and its choices
check_precision = _PRECISION.check


def engine_choice(engine: str):
    """Within the block, embedding without an explicit engine uses ``engine`` (``auto``, ``torch``, ``onnx``)."""
    return _ENGINE.chosen(engine)


def chosen_engine() -> str:
    """The engine :func:`engine_choice` set for this context (``auto`` outside any)."""
    return _ENGINE.variable.get()


def precision_choice(precision: str):
    """Within the block, embedding without an explicit precision uses ``precision`` (``fp32``, ``int8``)."""
    return _PRECISION.chosen(precision)


def chosen_precision() -> str:
    """The precision :func:`precision_choice` set for this context (``fp32`` outside any)."""
    return _PRECISION.variable.get()


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
    precision = "fp32"

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
        precision: the precision the file must record (``fp32``: an export; ``int8``: :func:`quantize_onnx`'s).
    """

    engine = "onnx"

    def __init__(self, path: str | os.PathLike, model_id: str | None = None, batch_size: int = 512,
                 threads: int = 0, precision: str = "fp32"):
        self.path = Path(path)
        self.session = _session(self.path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if model_id is not None and meta.get(MODEL_ID_KEY) != model_id:
            raise StylespaceError(f"{self.path} was exported from model {meta.get(MODEL_ID_KEY)!r}, not {model_id!r}; "
                                  "export it again (`stylespace export-onnx MODEL`)")
        found = meta.get(PRECISION_KEY, "fp32")
        if found != check_precision(precision):
            raise StylespaceError(f"{self.path} holds the model at {found} precision, not {precision}; "
                                  f"export it again (`stylespace export-onnx MODEL --precision {precision}`)")
        self.model_id = meta.get(MODEL_ID_KEY)
        self.precision = precision
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


def onnx_path(model, folder: str | os.PathLike | None = None, precision: str = "fp32") -> Path:
    """Where the ONNX file of ``model`` lives: beside it in ``folder`` (default: the folder it was loaded
    from) when that folder is writable, else in the cache; another ``precision`` than fp32 is a file of its
    own (``model-<id>-int8.onnx``)."""
    from stylespace.models import model_id

    name = model_id(model) + ("" if check_precision(precision) == "fp32" else f"-{precision}")
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


# int8 (issue 24): static quantisation in QDQ form, measured against dynamic quantisation on the 2-core AMD EPYC
# (AVX512-VNNI) with models/default: dynamic int8 (ConvInteger) ran slower than fp32 and moved the vectors far
# (mean cosine 0.81), static QDQ ran about twice as fast as fp32; QOperator form was no faster. What keeps the
# vectors close: a Conv's output quantised over the range of the ReLU / ReLU6 after it (the activation then
# dropped: quantising only these op types lets ONNX Runtime's quantiser see the pair; with every op type the
# cosine fell to 0.89), and the first INT8_FLOAT_CONVS convolutions (the stem and the first block, the
# layers nearest the pixels and cheapest) left in float: mean cosine to fp32 0.995 on 256 catalog images.
INT8_OP_TYPES = ("Conv", "Clip", "Relu")
INT8_FLOAT_CONVS = 3
# Calibration: a fixed, seeded sample of the images being embedded (the catalog's own), min/max ranges.
INT8_CALIBRATION_IMAGES = 256
INT8_CALIBRATION_MIN = 32
INT8_CALIBRATION_SEED = 0
INT8_CALIBRATION_BATCH = 32


def calibration_sample(pixels: np.ndarray, count: int = INT8_CALIBRATION_IMAGES,
                       seed: int = INT8_CALIBRATION_SEED) -> np.ndarray:
    """``count`` rows of ``pixels`` (N, H, W, 3) drawn without replacement with ``seed`` (all of them when there
    are fewer), in row order (a memory map is read forward): the same images for the same catalog, every time."""
    if len(pixels) <= count:
        return np.ascontiguousarray(pixels)
    rows = np.sort(np.random.default_rng([seed, 24]).choice(len(pixels), size=count, replace=False))
    return np.ascontiguousarray(pixels[rows])


class _CalibrationImages:
    """ONNX Runtime's CalibrationDataReader over uint8 images: the export's own input, a batch at a time."""

    def __init__(self, input_name: str, pixels: np.ndarray, batch_size: int = INT8_CALIBRATION_BATCH):
        self.batches = iter([{input_name: np.ascontiguousarray(pixels[start:start + batch_size])}
                             for start in range(0, len(pixels), batch_size)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def _int8_graph(source: Path, pixels: np.ndarray, scratch: Path):
    """The quantised graph (an ``onnx.ModelProto``) of the fp32 export ``source``, calibrated on ``pixels``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    prepared, quantised = scratch / "prepared.onnx", scratch / "int8.onnx"
    quant_pre_process(str(source), str(prepared))  # shape inference and ONNX Runtime's graph fusions, as advised
    graph = onnx.load(str(prepared))
    convs = [node.name for node in graph.graph.node if node.op_type == "Conv"]
    reader = _CalibrationImages(graph.graph.input[0].name, pixels)
    quantize_static(str(prepared), str(quantised), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(INT8_OP_TYPES), nodes_to_exclude=convs[:INT8_FLOAT_CONVS],
                    calibrate_method=CalibrationMethod.MinMax, reduce_range=int8_needs_reduced_range())
    return onnx.load(str(quantised))


def int8_needs_reduced_range() -> bool:
    """Whether int8 weights are quantised to 7 bits (ONNX Runtime's ``reduce_range``): on an x86 CPU without VNNI
    instructions (AVX2 only) ONNX Runtime's u8 x s8 kernels add pairs of products in 16 bits, which saturate with
    8-bit weights (measured on a 2-core EPYC without AVX-512: mean cosine to fp32 0.987 instead of 0.995; with 7-bit
    weights the same as with VNNI). A CPU with VNNI (AVX512-VNNI or AVX-VNNI), or not x86, keeps 8 bits. Where the
    flags cannot be read (not Linux) the 7 bits are the safe choice."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), None)
    except OSError:
        return True
    return flags is None or not ({"avx512_vnni", "avx_vnni"} & set(flags))


def quantize_onnx(source: str | os.PathLike, path: str | os.PathLike, calibration: np.ndarray) -> Path:
    """Quantise the fp32 ONNX export ``source`` (:func:`export_onnx`) to int8 at ``path``, calibrated on
    ``calibration`` (uint8 images at the model's input size: a :func:`calibration_sample` of the catalog's own),
    written atomically (a failure leaves any earlier ``path`` as it was) and recording the model id and
    ``int8``; returns ``path``."""
    import onnx

    source, path = Path(source), Path(path)
    graph = onnx.load(str(source))
    shape = graph.graph.input[0].type.tensor_type.shape.dim
    check_pixels(calibration, (shape[1].dim_value, shape[2].dim_value))
    if len(calibration) < 1:
        raise StylespaceError("int8 quantisation needs calibration images; got none")
    with tempfile.TemporaryDirectory(prefix="stylespace-int8-") as scratch, _quiet_quantiser():
        quantised = _int8_graph(source, calibration, Path(scratch))
    meta = {entry.key: entry.value for entry in quantised.metadata_props}
    meta.update({MODEL_ID_KEY: dict((e.key, e.value) for e in graph.metadata_props).get(MODEL_ID_KEY, ""),
                 PRECISION_KEY: "int8", "stylespace_calibration_images": str(len(calibration)),
                 "stylespace_int8_weight_bits": "7" if int8_needs_reduced_range() else "8"})
    del quantised.metadata_props[:]
    for key, value in meta.items():
        quantised.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    with atomic_write(path) as handle:
        handle.write(quantised.SerializeToString())
    return path


def _not_from_the_quantiser(record: logging.LogRecord) -> bool:
    return f"onnxruntime{os.sep}quantization{os.sep}" not in record.pathname


@contextlib.contextmanager
def _quiet_quantiser():
    """ONNX Runtime's quantiser logs a warning (on the root logger) for every tensor it leaves alone, such as
    the padding arithmetic's integers: not news for a user, so its records are dropped while it runs."""
    logging.root.addFilter(_not_from_the_quantiser)
    try:
        yield
    finally:
        logging.root.removeFilter(_not_from_the_quantiser)


def ensure_int8(model, calibration: np.ndarray | None = None, folder: str | os.PathLike | None = None) -> Path:
    """The int8 ONNX file of ``model`` (:func:`onnx_path` with ``precision="int8"``), made first when there is
    none for these weights: from its fp32 export (:func:`ensure_onnx`), calibrated on a
    :func:`calibration_sample` of ``calibration`` (the images being embedded; at least
    :data:`INT8_CALIBRATION_MIN`)."""
    path = onnx_path(model, folder, "int8")
    if path.is_file():
        return path
    if calibration is None or len(calibration) < INT8_CALIBRATION_MIN:
        from stylespace.models import model_id

        given = 0 if calibration is None else len(calibration)
        raise StylespaceError(
            f"precision int8: model {model_id(model)} has no int8 file yet, and {given} image(s) are too few to "
            f"calibrate it (it takes {INT8_CALIBRATION_MIN} or more of the catalog's own); make it with "
            "`stylespace export-onnx MODEL --precision int8 --catalog CATALOG`, or embed the catalog at this "
            "precision first (`stylespace index build ... --precision int8`)")
    source = ensure_onnx(model, folder)
    with _LOCK:
        if not path.is_file():
            log.info("quantising model to int8 on %d calibration images", min(len(calibration), INT8_CALIBRATION_IMAGES))
            quantize_onnx(source, path, calibration_sample(calibration))
    return path


def resolve_engine(engine: str, device: str | torch.device = "auto", model=None, images: int | None = None,
                   precision: str = "fp32") -> str:
    """``torch`` or ``onnx`` for ``engine`` (see the module docstring for what ``auto`` picks); ``images`` is
    how many images the caller will embed (None: a long-lived caller, such as the service). ``precision="int8"``
    runs on ONNX Runtime only: ``auto`` is ``onnx`` then, and ``torch`` an error."""
    check_engine(engine)
    if check_precision(precision) != "fp32":
        if engine == "torch":
            raise StylespaceError(f"precision {precision} runs on ONNX Runtime: use --engine onnx or auto, not torch "
                                  "(or --precision fp32)")
        engine = "onnx"
    target = device if isinstance(device, torch.device) else pick_device(device)
    if precision != "fp32" and target.type != "cpu":
        raise StylespaceError(f"precision {precision} runs on ONNX Runtime on the CPU, not {target}; "
                              "use --precision fp32 on a GPU")
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
                  batch_size: int = 512, precision: str | None = None,
                  calibration: np.ndarray | None = None) -> Embedder:
    """An :class:`Embedder` for ``model`` on ``engine`` (``auto``, ``torch`` or ``onnx``; None: the one
    :func:`engine_choice` set) at ``precision`` (``fp32`` or ``int8``; None: the one :func:`precision_choice`
    set); ``images`` as in :func:`resolve_engine`. The ONNX file is exported first when needed
    (:func:`ensure_onnx`), the int8 one quantised from it on a sample of ``calibration`` (:func:`ensure_int8`)."""
    from stylespace.models import model_id

    engine = engine or chosen_engine()
    precision = check_precision(precision or chosen_precision())
    batch_size = min(batch_size, batch_limit(model))
    if resolve_engine(engine, device, model, images, precision) == "torch":
        return TorchEmbedder(model, device, batch_size)
    if precision == "int8":
        return _int8_embedder(model, batch_size, calibration)
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


def _int8_embedder(model, batch_size: int, calibration: np.ndarray | None) -> OnnxEmbedder:
    """The int8 :class:`OnnxEmbedder` of ``model``: no quiet fall-back to another precision (it was asked for)."""
    from stylespace.models import model_id

    try:
        path = ensure_int8(model, calibration)
        try:
            return OnnxEmbedder(path, model_id(model), batch_size, precision="int8")
        except StylespaceError:  # a damaged or foreign file under this model's name: made again, once
            if calibration is None or len(calibration) < INT8_CALIBRATION_MIN:
                raise
            quantize_onnx(ensure_onnx(model), path, calibration_sample(calibration))
            return OnnxEmbedder(path, model_id(model), batch_size, precision="int8")
    except StylespaceError:
        raise
    except Exception as exc:
        raise StylespaceError(f"could not quantise this model to int8 ({type(exc).__name__}: {str(exc)[:200]}); "
                              "use --precision fp32") from None


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
# The int8 file is kept when its vectors' mean cosine to the fp32 export's, on catalog images, is at least this
# (models/default: 0.995 measured on 256 catalog images; the tiny test models: see tests/test_int8.py).
INT8_MIN_COSINE = 0.98


@dataclasses.dataclass
class ExportResult:
    """What :func:`export_checked` made and how closely it matches PyTorch (fp32), or the fp32 export (int8:
    the cosine of each image's two vectors, mean and least)."""

    model: str
    model_id: str
    onnx: str
    bytes: int
    images_checked: int
    max_abs_diff: float
    precision: str = "fp32"
    mean_cosine: float | None = None
    min_cosine: float | None = None
    calibration_images: int | None = None


def export_checked(model_dir: str | os.PathLike, output: str | os.PathLike | None = None,
                   images: int = 64, seed: int = 0, precision: str = "fp32", catalog=None) -> ExportResult:
    """Export the model saved in ``model_dir`` to ONNX (default: beside it, :func:`onnx_path`) and check that
    ONNX Runtime's embeddings of ``images`` generated images equal PyTorch's to :data:`PARITY_TOLERANCE`;
    a file that does not is removed and the export refused. ``precision="int8"`` then quantises that export
    (:func:`quantize_onnx`, to ``output`` or beside it), calibrated on a :func:`calibration_sample` of
    ``catalog`` (a path or a loaded catalog), and checks the mean cosine of its vectors to the fp32 export's on
    ``images`` other catalog images against :data:`INT8_MIN_COSINE`."""
    from stylespace.models import load_model, model_id

    check_precision(precision)
    if precision == "int8" and catalog is None:
        raise StylespaceError("precision int8 needs a catalog (--catalog CATALOG): a seeded sample of its images "
                              "calibrates the quantisation")
    model = load_model(model_dir, device="cpu")
    path = Path(output) if output is not None and precision == "fp32" else onnx_path(model, model_dir)
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
    if precision == "fp32":
        return ExportResult(str(model_dir), model_id(model), str(path), path.stat().st_size, images, diff)
    return _int8_checked(model, model_dir, path, output, catalog, images, seed, diff)


def _int8_checked(model, model_dir, fp32_path: Path, output, catalog, images: int, seed: int,
                  diff: float) -> ExportResult:
    """:func:`export_checked`'s int8 part: quantise ``fp32_path`` on ``catalog``'s images and check the cosine."""
    from stylespace.data import load_catalog, load_image_array
    from stylespace.models import model_id

    catalog = load_catalog(catalog) if isinstance(catalog, (str, os.PathLike)) else catalog
    array = load_image_array(catalog, size=tuple(model.config.input_size), progress=False)
    if len(array) < INT8_CALIBRATION_MIN:
        raise StylespaceError(f"{catalog.source_path}: {len(array)} decodable images; int8 calibration takes "
                              f"{INT8_CALIBRATION_MIN} or more")
    calibration = calibration_sample(array.pixels)
    path = Path(output) if output is not None else onnx_path(model, model_dir, "int8")
    quantize_onnx(fp32_path, path, calibration)
    checked = calibration_sample(array.pixels, images, seed + 1)
    ours = OnnxEmbedder(path, model_id(model), precision="int8")(checked)
    theirs = OnnxEmbedder(fp32_path, model_id(model))(checked)
    cosine = (ours * theirs).sum(axis=1)  # both unit length
    if not cosine.mean() >= INT8_MIN_COSINE:
        path.unlink(missing_ok=True)
        raise StylespaceError(f"the int8 model of {model_dir} gives vectors at mean cosine {cosine.mean():.4f} to "
                              f"fp32's (under {INT8_MIN_COSINE}); not kept: run this model at --precision fp32")
    return ExportResult(str(model_dir), model_id(model), str(path), path.stat().st_size, len(checked), diff,
                        "int8", float(cosine.mean()), float(cosine.min()), len(calibration))
