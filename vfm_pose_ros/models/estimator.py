"""The estimator interface every backend implements: ``predict(frame) -> list[ObjectPose]``.

Nodes, the CLI and the evaluator only see this class, so backends are swappable.
It also holds what all backends share at inference time: the catalogue, the torch
device and the numeric precision (fp16 autocast on CUDA, optional bf16 autocast on
the CPU), and a small stage timer that fills ``Prediction.timings_ms``.
"""
from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..core.catalogue import Catalogue
from ..core.icp import DepthStageConfig, SurfaceModel
from ..core.types import Frame, Prediction

# The depth stage's config keys (Estimator.refine_depth: use_depth, icp_*), shared by every backend's
# DEFAULT_CONFIG; their defaults are DepthStageConfig's.
DEPTH_STAGE_DEFAULTS: dict = DepthStageConfig().as_config()

# Stage names backends use in Prediction.timings_ms and ObjectPose.timings_ms (the bench command reads these).
STAGES = ("preprocess", "backbone", "head", "pnp", "icp", "total")


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None) -> cuda when available, else cpu; anything else is passed to torch.device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    return dev


def resolve_precision(precision: str | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for a precision setting, or None for plain fp32.

    'auto': fp16 on CUDA, fp32 on the CPU (bf16 autocast on the CPU is faster on
    some CPUs and slower on others: opt in with 'bf16'). 'fp16' is float16 on every
    device: CPU autocast runs it too (slowly), so the half-precision path CUDA takes
    is testable without a GPU.
    """
    p = (precision or "auto").lower()
    if p == "auto":
        return torch.float16 if device.type == "cuda" else None
    if p in ("fp32", "float32", "none"):
        return None
    if p in ("bf16", "bfloat16"):
        return torch.bfloat16
    if p in ("fp16", "float16", "half"):
        return torch.float16
    raise ValueError(f"precision must be auto, fp32, fp16 or bf16; got {precision!r}")


def depth_support(fitness: float | None) -> float:
    """The factor a pose's score takes when depth was used: 1 for a perfect ICP fit down to 0.5 when the
    masked depth is missing or does not fit the model, so instances the depth confirms rank above
    look-alikes it does not (a network's hallucination on the background has no object in its depth)."""
    return 0.5 + 0.5 * float(np.clip(0.0 if fitness is None else fitness, 0.0, 1.0))


class StageTimer:
    """Accumulates wall-clock milliseconds per named stage (synchronising CUDA so timings are real)."""

    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.ms: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - t0) * 1e3

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class Estimator(abc.ABC):
    """Base class of the backends' estimators (see vfm_pose_ros.models.BACKENDS)."""

    backend: str = ""
    # core.score_calibration.ScoreCalibration the frame pipeline applies (load_estimator sets it)
    score_calibration = None

    def __init__(self, catalogue: Catalogue, device: str | torch.device = "auto", precision: str = "auto",
                 config: dict | None = None):
        self.catalogue = catalogue
        self.device = pick_device(device)
        self.precision = precision
        self.amp_dtype = resolve_precision(precision, self.device)
        self.config = dict(config or {})
        self.depth_stage = DepthStageConfig.from_config(self.config)
        self._surfaces: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    @abc.abstractmethod
    def from_checkpoint(cls, path, device: str = "auto", **overrides) -> Estimator:
        """Build the estimator from a checkpoint written by models.checkpoint.save_checkpoint."""

    @abc.abstractmethod
    def predict(self, frame: Frame) -> Prediction:
        """Poses of the catalogue objects found in one frame (metres, object -> camera), with the call's stage
        times (``Prediction.timings_ms``)."""

    def predict_batch(self, frames: Sequence[Frame]) -> list[Prediction]:
        """One list of poses per frame; backends override this when they can batch the network."""
        return [self.predict(f) for f in frames]

    def autocast(self):
        """Autocast context for the network forward pass (a no-op context in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def compile_backbone(self, method: str) -> None:
        """With config ``compile_backbone: true``, replace ``self.net.<method>`` (the backbone call) by its
        torch.compile'd form: one-time compile cost for a faster backbone on CUDA (scripts/gpu_check.sh A/B)."""
        if self.config.get("compile_backbone", False):
            setattr(self.net, method, torch.compile(getattr(self.net, method), dynamic=True))

    def timer(self) -> StageTimer:
        return StageTimer(self.device)

    def surface(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Surface points and outward normals of an object (from the checkpoint, else sampled once)."""
        if name not in self._surfaces:
            obj = self.catalogue[name]
            sn = getattr(obj, "surface_normals", None)
            if sn is None:
                from ..core.catalogue import surface_samples

                sn = surface_samples(obj, self.depth_stage.points)
            self._surfaces[name] = sn
        return self._surfaces[name]

    def refine_depth(self, name: str, R, t, frame: Frame, mask, trust_pose: bool | None = None
                     ) -> tuple[np.ndarray, np.ndarray, float | None]:
        """The depth stage every backend shares (core.icp.refine_with_depth) on the depth inside ``mask``, with
        the config's ``icp_*`` keys. Returns (R, t, ICP fitness or None); the RGB pose when depth cannot help.
        R = None: no RGB pose at all (PnP failed); the depth search alone decides, from the cloud's centre."""
        from ..core import icp
        from ..core.transforms import depth_to_points

        pts, normals = self.surface(name)
        observed = depth_to_points(frame.depth, frame.K, mask=mask)
        depth_only = R is None
        if depth_only:
            if not len(observed):
                return None, None, None
            R, t, trust_pose = np.eye(3), np.median(observed, axis=0) - pts.mean(0), False
        obj = self.catalogue[name]
        model = SurfaceModel(pts, normals, obj.diameter, obj.symmetry)
        R, t, fitness = icp.refine_with_depth(R, t, observed, model, self.depth_stage, trust_pose=trust_pose)
        if depth_only and (fitness is None or fitness < self.depth_stage.min_fitness):  # nothing fits
            return None, None, None
        return R, t, fitness

    @property
    def object_names(self) -> list[str]:
        return self.catalogue.names

    def resolve_prompt(self, prompt: str):
        """What a prompt names (a core.prompts.Resolution); None for backends that take no prompt."""
        return None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(backend={self.backend!r}, objects={self.object_names}, "
                f"device={self.device}, precision={self.precision})")
