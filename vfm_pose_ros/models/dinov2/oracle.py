"""The DINOv2 estimator with its network replaced by perfect outputs made from the ground truth: test and
benchmark support (tests, scripts/bench_tracking.py)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...core.affine import out_affine
from .config import OUT_STRIDE
from .data import coord_targets, surface_renderer, vote_targets
from .estimator import Estimator


class OracleEstimator(Estimator):
    """The estimator with its network replaced by perfect outputs made from the ground truth.

    An upper bound that isolates the geometric stages (detection components, voting, PnP, ICP and
    tracking) from the network's error, for tests and benchmarks. Every frame it sees must carry
    ``gts`` (GroundTruthPose list with visible masks), e.g. ``frame.gts = scene_frame.gts``. Several
    instances of one object are supported: each cell votes for the instance that covers it. With representation
    "coords" the perfect output is each cell's model coordinates (the training target).
    """

    def _run(self, crops, timer, affines=None, frames=None):
        import cv2

        S = crops[0].shape[0]
        n = S // OUT_STRIDE
        kps = {nm: self.keypoints[i] for i, nm in enumerate(self.names)}
        coords = self.field_key == "coord"
        segs, vecs = [], []
        with timer("backbone"):  # stands in for the network's stages
            for A, fr in zip(affines, frames):
                gts = getattr(fr, "gts", None)
                if gts is None:
                    raise ValueError("OracleEstimator needs the ground truth on each frame: set frame.gts to the "
                                     "dataset frame's gts (GroundTruthPose with visible masks)")
                gts = [g for g in gts if g.name in self.names]
                inst = np.zeros(fr.shape, np.float32)  # ground-truth instance index + 1 of each pixel
                for k, g in enumerate(gts):
                    if g.mask is None:
                        raise ValueError(f"OracleEstimator: ground truth of {g.name} has no visible mask")
                    inst[np.asarray(g.mask, bool)] = k + 1
                cell_inst = cv2.warpAffine(inst, out_affine(A, OUT_STRIDE), (n, n), flags=cv2.INTER_NEAREST).astype(int)
                label = np.zeros((n, n), np.int64)
                per_object = (3,) if coords else (self.net.n_keypoints, 2)
                vec = np.zeros((len(self.names), *per_object, n, n), np.float32)
                for k, g in enumerate(gts):
                    cells = cell_inst == k + 1
                    if not cells.any():
                        continue
                    ci = self.names.index(g.name)
                    label[cells] = ci + 1
                    if coords:
                        target = coord_targets([g], fr.K, out_affine(A, OUT_STRIDE), n, self.names, self.catalogue,
                                               surface_renderer(fr.shape[1], fr.shape[0]))[0][ci]
                    else:
                        target = vote_targets([g], fr.K, A, self.names, kps, self.catalogue, S)[ci]
                    vec[ci][..., cells] = target[..., cells]
                segs.append(F.one_hot(torch.from_numpy(label), len(self.names) + 1).permute(2, 0, 1).float())
                vecs.append(torch.from_numpy(vec))
        field = torch.stack(vecs)
        if coords:  # the head's normalised units
            field = self.net.normalise_coords(field.to(self.net.coord_scale.device)).cpu()
        return {"seg": torch.stack(segs), self.field_key: field}
