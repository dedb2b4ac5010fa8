"""Inference backends. `Backend` is what the batcher calls; `OrtBackend` runs an ONNX file in ONNX Runtime.

The backend knows nothing of queues or HTTP: it turns a float32 NCHW batch into heatmaps. It pads batches
to a small set of sizes so that ONNX Runtime (and TensorRT engines) see few distinct shapes, all warmed up
before the service reports ready.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from posecore.errors import ModelLoadError

__all__ = ["Backend", "ModelLoadError", "OrtBackend", "ProviderStatus", "open_session"]

log = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class Backend(Protocol):
    """What the serving layer needs of a pose model (OrtBackend; tests pass fakes)."""

    @property
    def input_hw(self) -> tuple[int, int]: ...

    @property
    def heatmap_hw(self) -> tuple[int, int]: ...

    @property
    def num_keypoints(self) -> int: ...

    @property
    def max_batch_size(self) -> int: ...

    @property
    def provider(self) -> str: ...

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N,3,H,W) -> float32 (N,K,h,w)."""
        ...

    def warmup(self) -> None: ...


@dataclass
class ProviderStatus:
    requested: str
    active: str
    ok: bool
    reason: str = ""


def choose_providers(requested: str, available: list[str], trt_cache_dir: Path | None = None,
                     trt_fp16: bool = False) -> list:
    """Execution providers in priority order for `requested` (auto | cpu | cuda | tensorrt).

    `auto` uses CUDA when this onnxruntime build has it, never TensorRT (engine builds take minutes; ask
    for it explicitly). CPU is always last so a session can be created; `provider_status` then reports
    whether the requested provider really became active.
    """
    if requested == "auto":
        requested = "cuda" if PROVIDER_NAMES["cuda"] in available else "cpu"
    chain: list = []
    if requested == "tensorrt":
        trt_options: dict[str, str] = {"trt_fp16_enable": str(trt_fp16)}
        if trt_cache_dir is not None:
            trt_options |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(trt_cache_dir)}
        chain.append((PROVIDER_NAMES["tensorrt"], trt_options))
    if requested in ("tensorrt", "cuda"):
        chain.append(PROVIDER_NAMES["cuda"])
    chain.append(PROVIDER_NAMES["cpu"])
    return chain


def _provider_name(entry) -> str:
    return entry[0] if isinstance(entry, tuple) else entry


def batch_shapes(fixed_batch: int | None, max_batch: int, provider: str) -> list[int]:
    """The batch sizes a session is run with: its fixed batch axis, or padded_batch_sizes for a dynamic one."""
    return [fixed_batch] if fixed_batch else padded_batch_sizes(max_batch, gpu=provider != PROVIDER_NAMES["cpu"])


def run_in_padded_batches(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray,
                          batch_sizes: list[int]) -> list[np.ndarray]:
    """`run` over `batch` in slices of at most the largest allowed size, each zero-padded up to the next allowed
    size (the shapes warmed up before ready) and its output trimmed back. Shared by the pose model and the
    detector."""
    step = batch_sizes[-1]
    outputs = []
    for start in range(0, len(batch), step):
        part = batch[start : start + step]
        n = len(part)
        size = next(s for s in batch_sizes if s >= n)
        if size > n:
            part = np.concatenate([part, np.zeros((size - n, *part.shape[1:]), part.dtype)])
        outputs.append(run(part)[:n])
    return outputs


def padded_batch_sizes(max_batch_size: int, gpu: bool) -> list[int]:
    """The batch shapes the session will see. On GPU, powers of two (plus the max): TensorRT builds an
    engine per shape and padding is nearly free. On CPU cost is linear in batch size, so padding would
    only burn cycles: every size up to the max (a handful) is allowed."""
    if not gpu:
        return list(range(1, max_batch_size + 1))
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


def open_session(
    model_path: Path,
    *,
    provider: str = "auto",
    intra_op_threads: int = 0,
    trt_cache_dir: Path | None = None,
    trt_fp16: bool = False,
    spin: bool = True,
) -> tuple[ort.InferenceSession, ProviderStatus]:
    """An ONNX Runtime session on the best available provider for `provider`, and what became active.

    Shared by the pose model and the person detector. Raises ModelLoadError with one line naming the file.
    """
    if not model_path.is_file():
        raise ModelLoadError(f"model file not found: {model_path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spin:  # ORT's threads spin between ops; on a CPU shared with preprocessing that steals cycles
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = ort.get_available_providers()
    chain = choose_providers(provider, available, trt_cache_dir, trt_fp16)
    usable = [p for p in chain if _provider_name(p) in available]  # ask ORT only for what it has
    try:
        session = ort.InferenceSession(str(model_path), options, providers=usable)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelLoadError(f"cannot load ONNX model {model_path}: {str(exc).splitlines()[0]}") from exc
    return session, _provider_status(session, chain)


def _provider_status(session: ort.InferenceSession, chain: list) -> ProviderStatus:
    wanted = _provider_name(chain[0])
    active = session.get_providers()[0]
    ok = active == wanted
    reason = "" if ok else f"{wanted} was requested but {active} is active (is onnxruntime-gpu installed?)"
    if not ok:
        log.warning("execution provider fallback: %s", reason)
    return ProviderStatus(requested=wanted, active=active, ok=ok, reason=reason)


class OrtBackend:
    """The pose model in one ONNX Runtime session: float32 NCHW crops -> heatmaps.

    `infer` is called from one worker thread at a time (the batcher's). Batches are padded to `batch_sizes`.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        provider: str = "auto",
        intra_op_threads: int = 0,
        max_batch: int = 8,
        trt_cache_dir: Path | None = None,
        trt_fp16: bool = False,
        spin: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        self.max_batch_size = max_batch
        self.session, self.status = open_session(
            self.model_path, provider=provider, intra_op_threads=intra_op_threads, trt_cache_dir=trt_cache_dir,
            trt_fp16=trt_fp16, spin=spin,
        )
        # IO binding keeps the heatmaps on the device until one copy back; only CUDA gains from it.
        self.use_io_binding = self.provider == PROVIDER_NAMES["cuda"]
        self._read_shapes()
        self.batch_sizes = batch_shapes(self.fixed_batch, max_batch, self.provider)

    @property
    def provider(self) -> str:
        return self.status.active

    def _read_shapes(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelLoadError(f"{self.model_path}: expected one NCHW image input, got {[i.shape for i in inputs]}")
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        self.input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        batch_dim, channels, height, width = inputs[0].shape
        if not all(isinstance(d, int) for d in (channels, height, width)) or channels != 3:
            raise ModelLoadError(f"{self.model_path}: input must be (N,3,H,W) with fixed H, W; got {inputs[0].shape}")
        self.input_hw: tuple[int, int] = (height, width)
        # A fixed batch dimension (e.g. 1) means crops are run that many at a time.
        self.fixed_batch: int | None = batch_dim if isinstance(batch_dim, int) else None
        probe = self._run(np.zeros((self.fixed_batch or 1, 3, height, width), self.input_dtype))
        if probe.ndim != 4:
            raise ModelLoadError(f"{self.model_path}: expected (N,K,h,w) heatmaps, got shape {probe.shape}")
        self.num_keypoints: int = probe.shape[1]
        self.heatmap_hw: tuple[int, int] = (probe.shape[2], probe.shape[3])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.use_io_binding:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, batch)
            binding.bind_output(self.output_name, "cuda")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != self.input_dtype:
            batch = batch.astype(self.input_dtype)
        out = run_in_padded_batches(self._run, batch, self.batch_sizes)
        return (out[0] if len(out) == 1 else np.concatenate(out)).astype(np.float32, copy=False)

    def warmup(self) -> None:
        """Run every padded batch shape once, so no request pays for a first-shape allocation or engine."""
        shape = (3, *self.input_hw)
        for size in self.batch_sizes:
            self._run(np.zeros((size, *shape), self.input_dtype))
