"""Inference backends for the bi-encoder's forward (transformer + mean pooling): torch, ONNX Runtime, OpenVINO.

A bi-encoder with a token head (`BiEncoder.token_head`, a sense encoder taught where the writer's lines are spliced)
adds one column to the graph's output: the head's largest logit over each text's tokens (`runtime.max_token_logit`).

Torch is the reference and the training path. The others run an ONNX graph exported from the same weights:

- "onnx": ONNX Runtime, fp32. The same numbers as torch within float noise.
- "onnx-int8": ONNX Runtime with dynamic int8 quantization (int8 weights per output channel, activations
  quantized per batch on the fly). It moves cosines by a few hundredths, enough to swap near-ties, so it is
  "approximate": contexts and the best few candidates (`Editor.refine`) go through the fp32 graph.
- "openvino": OpenVINO's CPU plugin on the fp32 ONNX graph, pinned to fp32 inference.
- "auto": the fastest path that keeps the ranking (benchmarks/RESULTS.md, "The editor, faster"): torch on CUDA
  and on CPUs with native bf16 (measured there before this module), int8 plus the fp32 refine elsewhere.

An exported graph is a cache, never part of the saved model: `<model dir>/onnx/<fingerprint>/model.onnx`, where
the fingerprint hashes the weights, config.json, the token head (if any), the export settings and the library
versions. A missing or stale entry is rebuilt; when that cannot be done (no onnxruntime, an export error, a
read-only directory) the bi-encoder stays on torch and says why in a logged warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from reranker.runtime import cpu_has_bf16, has_vnni, max_token_logit, mean_pool

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "onnx-int8", "openvino")
APPROXIMATE = ("onnx-int8",)  # backends whose scores differ from fp32 by more than float noise
# "auto" on a CPU without native bf16. On a 2-core AVX2 EPYC, 40 real turns: 2.07x the torch editor before this
# module with top-1 agreement 100% after the refine (82.5% without it); fp32 ONNX Runtime 1.79x (benchmarks/RESULTS.md).
AUTO_CPU = "onnx-int8"
ENV_VAR = "RIPOSTE_EDITOR_BACKEND"  # overrides backend="auto", e.g. RIPOSTE_EDITOR_BACKEND=torch
CACHE_DIR = "onnx"  # beside the weights, inside the saved bi-encoder directory
EXPORT_VERSION = 1  # bump when the exported graph changes, so old cache entries go stale
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ExportConfig:
    """How a graph is exported; every field goes into the cache fingerprint."""

    variant: str = "fp32"  # "fp32" or "int8"
    opset: int = 17
    # int8: scales per output channel keep the small MiniLM rows from being crushed by the large ones.
    per_channel: bool = True
    # 7-bit weights: without VNNI, x86 int8 kernels sum pairs of u8*s8 products in int16, which saturates
    # on 8-bit weights; with VNNI the full range is safe.
    reduce_range: bool = True
    export_version: int = EXPORT_VERSION

    def __post_init__(self) -> None:
        if self.variant not in ("fp32", "int8"):
            raise ValueError(f"variant must be 'fp32' or 'int8', got {self.variant!r}")
        if self.opset < 14:
            raise ValueError(f"opset must be at least 14 (LayerNormalization fusions), got {self.opset}")


def resolve_backend(requested: str | None, device: torch.device, *, approximate_ok: bool = False) -> str:
    """The concrete backend for `requested` ("auto" or None reads RIPOSTE_EDITOR_BACKEND, then picks by machine).

    "auto" picks an approximate (int8) backend only for callers that rescore their best exactly (`approximate_ok`,
    the editor); a bare bi-encoder ranks with what it computes, so it gets the exact fp32 graph instead.
    """
    if requested in (None, "auto"):
        requested = os.environ.get(ENV_VAR, "").strip() or "auto"
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r} (from the argument or ${ENV_VAR})")
    if requested != "auto":
        return requested
    # Where torch has native bf16 it was the fastest path measured (bf16 about 950 candidates/s against fp32's 300 and
    # torch int8's 460, MiniLM-L6 on an AVX-512 bf16 Xeon); onnxruntime int8 was not measured there.
    if device.type != "cpu" or cpu_has_bf16():
        return "torch"
    return AUTO_CPU if approximate_ok or AUTO_CPU not in APPROXIMATE else "onnx"


# ---- the cache ----------------------------------------------------------------------------------------------


def fingerprint(directory: str | os.PathLike, config: ExportConfig, token_head: torch.nn.Linear | None = None) -> str:
    """Hex digest of the weights, config.json, the token head's weights (if any), the export settings and the library
    versions: the cache key."""
    import onnxruntime

    directory = Path(directory)
    digest = hashlib.sha256()
    weights = [directory / name for name in WEIGHT_FILES if (directory / name).is_file()]
    if not weights:
        raise FileNotFoundError(f"{directory} has no weights file (one of {', '.join(WEIGHT_FILES)})")
    for path in [*weights, directory / "config.json"]:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    if token_head is not None:
        for tensor in token_head.state_dict().values():
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    settings = {**asdict(config), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                # only with a head: the graphs cached before heads existed keep their keys
                **({"token_head": True} if token_head is not None else {})}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cached_graph(model: torch.nn.Module, directory: str | os.PathLike, config: ExportConfig,
                 token_head: torch.nn.Linear | None = None) -> Path:
    """Path of the exported graph for `model` (loaded from `directory`) and its token head, exporting it into the
    cache if needed."""
    directory = Path(directory)
    key = fingerprint(directory, config, token_head)
    entry = directory / CACHE_DIR / key
    graph = entry / "model.onnx"
    if graph.is_file():
        return graph
    root = directory / CACHE_DIR
    root.mkdir(exist_ok=True)
    # Build in a temporary sibling and rename: a crash or a second process never sees half a graph.
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root))
    try:
        started = time.perf_counter()
        export(model, tmp / "model.onnx", config, token_head)
        (tmp / "export.json").write_text(json.dumps({**asdict(config), "fingerprint": key}, indent=1), encoding="utf-8")
        try:
            os.rename(tmp, entry)
        except OSError:
            if not graph.is_file():  # another process won the race only if its graph is there
                raise
        log.info("exported the bi-encoder to %s in %.1f s", graph, time.perf_counter() - started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _drop_stale(root, keep=key, variant=config.variant)
    return graph


def _drop_stale(root: Path, *, keep: str, variant: str) -> None:
    """Remove older entries of the same variant (their weights or settings changed): each is a model's size."""
    for entry in root.iterdir():
        if entry.name == keep or entry.name.startswith("."):
            continue
        try:
            if json.loads((entry / "export.json").read_text(encoding="utf-8")).get("variant") == variant:
                shutil.rmtree(entry, ignore_errors=True)
        except (OSError, ValueError):
            continue


# ---- export ---------------------------------------------------------------------------------------------------


class MeanPooled(torch.nn.Module):
    """The exported function, as BiEncoder._forward: ids and mask (B, T) -> mean-pooled last hidden states (B, H),
    and with a token head its largest logit over each text as one more column (B, H + 1)."""

    def __init__(self, model: torch.nn.Module, token_head: torch.nn.Linear | None = None) -> None:
        super().__init__()
        self.model = model
        self.token_head = token_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        if self.token_head is None:
            return pooled
        return torch.cat([pooled, max_token_logit(hidden, attention_mask, self.token_head)[:, None]], dim=1)


def export(model: torch.nn.Module, path: Path, config: ExportConfig, token_head: torch.nn.Linear | None = None) -> None:
    """Write `model` (an HF encoder, fp32) with mean pooling (and `token_head`'s max) as an ONNX graph at `path`,
    quantized if config says int8."""
    import warnings

    path = Path(path)
    fp32_path = path if config.variant == "fp32" else path.with_name("fp32.onnx")
    ids = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]], dtype=torch.long)  # (2, 4): any ids, the axes are dynamic
    mask = (ids != 0).long()
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "pooled": {0: "batch"}}
    wrapped = MeanPooled(model, token_head).eval()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        # The TorchScript exporter: 0.4 s for a tiny model where the dynamo one takes 9 s, and a single file.
        torch.onnx.export(wrapped, (ids, mask), str(fp32_path), input_names=["input_ids", "attention_mask"],
                          output_names=["pooled"], dynamic_axes=axes, opset_version=config.opset, dynamo=False)
    if config.variant == "int8":
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer warns on the root logger about a pre-processing we do not need
        try:
            quantize_dynamic(str(fp32_path), str(path), weight_type=QuantType.QInt8, per_channel=config.per_channel,
                             reduce_range=config.reduce_range,
                             # the TorchScript graph leaves some MatMul outputs untyped; they are all float
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            root.setLevel(level)
        fp32_path.unlink()


# ---- runners --------------------------------------------------------------------------------------------------


class OnnxRunner:
    """An ONNX Runtime session over an exported graph: (ids, mask) int64 (B, T) -> pooled (B, H [+ 1]) float32."""

    def __init__(self, graph: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between runs: a spinning pool starves whatever runs next on a 2-core machine (the int8
        # session's spin doubled the fp32 rescoring of 8 texts, 26 -> 58 ms) and costs the int8 session nothing.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]


class OpenVinoRunner:
    """OpenVINO's CPU plugin over the fp32 ONNX graph, held to fp32 (it would pick bf16 on CPUs that have it)."""

    def __init__(self, graph: Path, threads: int) -> None:
        import openvino as ov

        compiled = ov.Core().compile_model(str(graph), "CPU", {
            "INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        self.request = compiled.create_infer_request()
        # One request is not safe across threads, and two use it: the scheduler's, and a turn's own when it embeds
        # its context to score a reply index's kept readings. ONNX Runtime sessions and torch need no lock.
        self._lock = threading.Lock()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with self._lock:
            out = self.request.infer({"input_ids": input_ids, "attention_mask": attention_mask})
            return np.array(out[0], dtype=np.float32)  # a copy: the request reuses its output buffer


def build_runner(model: torch.nn.Module, directory: str | os.PathLike | None, backend: str, *,
                 threads: int | None = None, token_head: torch.nn.Linear | None = None
                 ) -> OnnxRunner | OpenVinoRunner | None:
    """A runner for `backend` on `model` saved in `directory` (with its token head, if any), or None (torch) with a
    logged warning if it cannot be had."""
    if backend == "torch":
        return None
    threads = threads or torch.get_num_threads()
    if directory is None:
        log.warning("backend %r needs the bi-encoder's saved directory for its graph cache; using torch", backend)
        return None
    try:
        import onnxruntime  # noqa: F401  (the fingerprint and the int8 export need it even for OpenVINO)

        if backend == "openvino":
            import openvino  # noqa: F401
    except ImportError as exc:
        log.warning("backend %r is unavailable (%s); using torch. Install onnxruntime (and openvino) to use it",
                    backend, exc)
        return None
    int8 = backend == "onnx-int8"
    # reduce_range only shapes int8 weights; fixed for fp32 so a directory moved between machines keeps its graph
    config = ExportConfig(variant="int8" if int8 else "fp32", reduce_range=not has_vnni() if int8 else True)
    try:
        graph = cached_graph(model, directory, config, token_head)
        return OpenVinoRunner(graph, threads) if backend == "openvino" else OnnxRunner(graph, threads)
    except Exception as exc:  # noqa: BLE001  (any failure here must leave a working torch editor)
        log.warning("backend %r could not be prepared in %s (%s: %s); using torch", backend,
                    Path(directory) / CACHE_DIR, type(exc).__name__, exc)
        return None
