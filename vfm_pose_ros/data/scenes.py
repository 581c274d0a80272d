"""Synthetic scenes with exact ground truth: catalogue objects posed over the view sphere, rendered on the CPU.

Each frame puts every selected catalogue object once into the image, either
resting on a textured table (a stable pose from trimesh, random yaw, the camera
looking down at 20-80 degrees elevation) or floating (uniform random rotation)
in front of a procedural background, plus optional distractor shapes (boxes,
spheres, cylinders) that occlude but are not ground truth. Light direction,
intensity, ambient level, textures and sensor noise vary per frame.

Frame ``i`` of stream ``s`` draws from ``numpy.random.default_rng([seed, s, i])``
alone, so any frame can be regenerated on its own and train/test streams never
share frames. Frames where a catalogue object is less than ``min_visib_fract``
visible (or under ``min_visib_pixels`` pixels) are drawn again, up to
``max_tries`` times; the last draw is kept otherwise and its visible fractions
are recorded as they are (``SyntheticFrame.accepted`` is then False).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.catalogue import Catalogue
from ..core.types import GroundTruthPose
from .render import Light, Plane, Renderer

# The LM-O (Primesense) camera used by BOP's LM and LM-O test images.
LMO_K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@dataclass
class SceneConfig:
    """What varies and within which ranges. Distances are camera-to-object, metres."""

    width: int = 640
    height: int = 480
    K: np.ndarray = field(default_factory=lambda: LMO_K.copy())
    distance: tuple[float, float] = (0.5, 1.2)
    placement: str = "mixed"  # table | floating | mixed
    table_prob: float = 0.5  # mixed: share of table frames
    elevation_deg: tuple[float, float] = (15.0, 75.0)  # table: camera elevation above the table
    distractors: int = 2  # at most this many distractor shapes per frame (0..n, uniformly)
    # share of frames holding no catalogue object, only background and 1..max(1, distractors) distractors:
    # training negatives, so that scores mean "the object is there"; and phantom-rate benchmarks
    empty_prob: float = 0.0
    min_visib_fract: float = 0.1
    min_visib_pixels: int = 100
    max_tries: int = 30
    light_intensity: tuple[float, float] = (0.45, 1.0)
    ambient: tuple[float, float] = (0.15, 0.45)
    noise_std: float = 3.0  # at most this Gaussian pixel noise (uint8 levels)
    blur_prob: float = 0.3

    def __post_init__(self):
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        if self.placement not in ("table", "floating", "mixed"):
            raise ValueError(f"placement must be table, floating or mixed; got {self.placement!r}")
        lo, hi = self.distance
        if not 0.05 < lo <= hi:
            raise ValueError(f"distance range must satisfy 0.05 < min <= max, got {self.distance}")
        if not 0.0 <= self.empty_prob <= 1.0:
            raise ValueError(f"empty_prob (--empty-frac) must lie in [0, 1], got {self.empty_prob}")


@dataclass
class SyntheticFrame:
    """One generated frame; ``gts`` and the mask lists are in the same order (catalogue objects only)."""

    rgb: np.ndarray  # HxWx3 uint8
    depth: np.ndarray  # HxW float32 metres (0 = background beyond the table)
    K: np.ndarray
    gts: list[GroundTruthPose]
    masks_visib: list[np.ndarray]
    masks_full: list[np.ndarray]
    placement: str
    tries: int
    accepted: bool  # every object met the visibility thresholds


@dataclass
class _Shape:
    """A distractor mesh: the renderer needs only these attributes."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray


# ------------------------------------------------------------------- textures
def _value_noise(rng, h: int, w: int, octaves: int = 4, base: int = 4) -> np.ndarray:
    """Multi-octave value noise in [0, 1] (random grids upsampled bicubically with cv2)."""
    import cv2

    out = np.zeros((h, w), dtype=np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        gh, gw = base * 2**o, int(base * 2**o * w / h) + 1
        grid = rng.random((gh, gw), dtype=np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    return np.clip((out - out.min()) / max(float(np.ptp(out)), 1e-6), 0.0, 1.0)


def _palette(rng, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3)).astype(np.float32)


def _colorize(t: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Map t in [0, 1] through a piecewise-linear palette of len(colors) colours (a 256-entry lookup table)."""
    x = np.linspace(0.0, 1.0, len(colors))
    lut = np.stack([np.interp(np.linspace(0.0, 1.0, 256), x, colors[:, c]) for c in range(3)], axis=-1)
    return lut.astype(np.float32)[np.clip(np.asarray(t) * 255.0 + 0.5, 0, 255).astype(np.uint8)]


def random_background(rng, height: int, width: int) -> np.ndarray:
    """A procedural background (no external images): gradient, noise, stripes or clutter of shapes."""
    import cv2

    kind = rng.integers(4)
    if kind == 0:  # linear gradient at a random angle
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xx * math.cos(a) + yy * math.sin(a)
        img = _colorize((t - t.min()) / max(float(np.ptp(t)), 1e-6), _palette(rng, 2))
    elif kind == 1:  # coloured value noise
        img = _colorize(_value_noise(rng, height, width, base=int(rng.integers(2, 8))), _palette(rng, 3))
    elif kind == 2:  # stripes / checker with noise
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        p = rng.uniform(10, 80)
        a = rng.uniform(0, math.pi)
        u = xx * math.cos(a) + yy * math.sin(a)
        v = -xx * math.sin(a) + yy * math.cos(a)
        t = (np.floor(u / p) + (np.floor(v / p) if rng.random() < 0.5 else 0)) % 2
        t = 0.8 * t + 0.2 * _value_noise(rng, height, width)
        img = _colorize(t, _palette(rng, 2))
    else:  # clutter: random filled rectangles and circles over noise
        img = _colorize(_value_noise(rng, height, width), _palette(rng, 2)).astype(np.float32)
        for _ in range(int(rng.integers(8, 25))):
            col = tuple(float(c) for c in rng.integers(0, 256, 3))
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            s = int(rng.integers(10, max(11, height // 3)))
            if rng.random() < 0.5:
                cv2.rectangle(img, (x, y), (x + s, y + int(rng.integers(10, s + 11))), col, -1)
            else:
                cv2.circle(img, (x, y), s // 2, col, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_texture(rng, size: int = 256) -> np.ndarray:
    """A tileable-enough table texture: wood grain, tiles or coloured noise."""
    kind = rng.integers(3)
    if kind == 0:  # wood: warped stripes
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        warp = _value_noise(rng, size, size, octaves=3, base=2)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (yy / size * rng.integers(4, 12) + 2.0 * warp))
        wood = np.array([[90, 55, 30], [150, 100, 60], [200, 150, 100]], dtype=np.float32)
        img = _colorize(0.7 * t + 0.3 * _value_noise(rng, size, size), wood * rng.uniform(0.7, 1.2))
    elif kind == 1:  # tiles
        yy, xx = np.mgrid[0:size, 0:size]
        n = int(rng.integers(2, 8))
        t = ((xx * n // size) + (yy * n // size)) % 2
        grout = ((xx * n) % size < 3) | ((yy * n) % size < 3)
        pal = _palette(rng, 2)
        img = pal[t] * (0.85 + 0.15 * _value_noise(rng, size, size))[..., None]
        img[grout] = 0.5 * pal.mean(axis=0)
    else:
        img = _colorize(_value_noise(rng, size, size, base=int(rng.integers(2, 6))), _palette(rng, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ geometry
def _look_at(cam_pos, target, roll_rad: float = 0.0):
    """Camera-from-world (R, t) of a camera at cam_pos looking at target, world z up, optical frame axes."""
    z = np.asarray(target, float) - np.asarray(cam_pos, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-6:  # looking straight down
        x = np.array([1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = math.cos(roll_rad), math.sin(roll_rad)
    x, y = c * x + s * y, -s * x + c * y
    R_wc = np.stack([x, y, z], axis=1)
    R_cw = R_wc.T
    return R_cw, -R_cw @ np.asarray(cam_pos, float)


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _random_rotation(rng) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=rng).as_matrix()


def _radius(obj) -> float:
    """Bounding-sphere radius about the object origin."""
    return float(np.linalg.norm(obj.vertices, axis=1).max())


def make_distractor(rng) -> _Shape:
    """A random box, sphere or cylinder (3-12 cm), one random colour with slight per-vertex variation."""
    import trimesh

    kind = int(rng.integers(3))
    if kind == 0:
        mesh = trimesh.creation.box(extents=rng.uniform(0.03, 0.12, 3))
        mesh.unmerge_vertices()
        name = "box"
    elif kind == 1:
        mesh = trimesh.creation.icosphere(subdivisions=2, radius=float(rng.uniform(0.02, 0.06)))
        name = "sphere"
    else:
        mesh = trimesh.creation.cylinder(radius=float(rng.uniform(0.015, 0.05)),
                                         height=float(rng.uniform(0.04, 0.12)), sections=24)
        name = "cylinder"
    v = np.asarray(mesh.vertices)
    base = rng.integers(20, 236, 3)
    col = np.clip(base + rng.integers(-15, 16, (len(v), 3)), 0, 255).astype(np.uint8)
    return _Shape(name, v, np.asarray(mesh.faces), col)


class SceneGenerator:
    """Generates synthetic frames of catalogue objects (deterministic by seed, stream and index)."""

    def __init__(self, objects, config: SceneConfig | None = None, seed: int = 0):
        self.objects = list(objects)
        if not self.objects:
            raise ValueError("SceneGenerator needs at least one catalogue object")
        self.config = config or SceneConfig()
        self.seed = int(seed)
        c = self.config
        self.renderer = Renderer(c.width, c.height, c.K)
        self._stable: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------- placement
    def stable_poses(self, obj):
        """Resting poses on a plane z = 0 (trimesh.poses.compute_stable_poses) and their probabilities."""
        hit = self._stable.get(obj.name)
        if hit is None:
            import trimesh

            mesh = trimesh.Trimesh(obj.vertices, obj.faces, process=False)
            T, p = trimesh.poses.compute_stable_poses(mesh, center_mass=mesh.convex_hull.center_mass)
            p = np.asarray(p, dtype=float)
            # mix with uniform so rarer resting poses still appear
            p = 0.5 * p / p.sum() + 0.5 / len(p)
            hit = (np.asarray(T)[:, :3, :3], p / p.sum())
            self._stable[obj.name] = hit
        return hit

    def _table_scene(self, rng, items):
        """Objects resting on a table z = 0 around the origin; the camera looks at them from above."""
        c = self.config
        import cv2

        placed = []  # (obj, R_world, t_world, footprint centre, footprint hull in the table plane)
        spread = 0.04 + 0.025 * len(items)  # tight enough that objects hide each other from low views
        for obj in items:
            if isinstance(obj, _Shape):  # boxes flat, cylinders upright or lying, spheres anyhow
                R0 = {"box": np.eye(3), "sphere": _random_rotation(rng)}.get(
                    obj.name, np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]) if rng.random() < 0.5 else np.eye(3))
            else:
                Rs, p = self.stable_poses(obj)
                R0 = Rs[rng.choice(len(Rs), p=p)]
            Rw = _rot_z(rng.uniform(0, 2 * math.pi)) @ R0
            vw = obj.vertices @ Rw.T
            hull = cv2.convexHull(vw[:, :2].astype(np.float32))
            for _ in range(50):  # footprints (convex hulls) must not overlap: objects never interpenetrate
                xy = rng.uniform(-spread, spread, 2)
                moved = hull + xy.astype(np.float32)
                if all(cv2.intersectConvexConvex(moved, q[4])[0] < 1e-6 for q in placed):
                    break
                spread *= 1.03  # crowded: widen the table area a little
            t = np.array([xy[0], xy[1], -vw[:, 2].min()])
            placed.append((obj, Rw, t, np.array([xy[0], xy[1], 0.0]), moved))
        centre = np.mean([q[3] for q in placed if not isinstance(q[0], _Shape)] or [np.zeros(3)], axis=0)
        target = centre + np.array([0.0, 0.0, 0.04]) + np.append(rng.normal(0, 0.03, 2), 0.0)
        elev = math.radians(rng.uniform(*c.elevation_deg))
        azim = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(*c.distance)
        cam = target + dist * np.array(
            [math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)])
        R_cw, t_cw = _look_at(cam, target, math.radians(rng.normal(0, 8)))
        poses = [(q[0], R_cw @ q[1], R_cw @ q[2] + t_cw) for q in placed]
        # the table in the camera frame; its texture axes are the world x and y axes
        plane = Plane(
            normal=R_cw[:, 2], origin=t_cw, axes=np.stack([R_cw[:, 0], R_cw[:, 1]]),
            texture=random_texture(rng), texel_m=float(rng.uniform(0.001, 0.004)),
            max_depth=float(dist + rng.uniform(0.6, 2.0)),
        )
        return poses, plane

    def _floating_scene(self, rng, items):
        """Objects at random depths and image positions with uniform random rotations, spheres not overlapping."""
        c = self.config
        K = c.K
        placed = []
        cu, cv = rng.uniform(0.3, 0.7) * c.width, rng.uniform(0.3, 0.7) * c.height  # cluster: objects overlap
        for obj in items:
            r = _radius(obj)
            t = None
            for _ in range(50):
                z = rng.uniform(*c.distance)
                u = float(np.clip(cu + rng.normal(0, 0.1 * c.width), 0.1 * c.width, 0.9 * c.width))
                v = float(np.clip(cv + rng.normal(0, 0.1 * c.height), 0.1 * c.height, 0.9 * c.height))
                cand = np.array([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])
                if all(np.linalg.norm(cand - q[2]) > 0.85 * (r + q[3]) for q in placed):
                    t = cand
                    break
            if t is None:
                t = cand
            placed.append((obj, _random_rotation(rng), t, r))
        return [(q[0], q[1], q[2]) for q in placed], None

    def _light(self, rng) -> Light:
        c = self.config
        d = (float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.5, 1.0)), -1.0)
        return Light(direction=d, intensity=float(rng.uniform(*c.light_intensity)),
                     ambient=float(rng.uniform(*c.ambient)))

    # ----------------------------------------------------------------- frames
    def frame(self, index: int, stream: int = 0) -> SyntheticFrame:
        """Frame ``index`` of ``stream`` (e.g. 0 = train, 1 = test); the same arguments give the same frame."""
        import cv2

        c = self.config
        rng = np.random.default_rng([self.seed, int(stream), int(index)])
        # its own stream, so that frames of a config without empty frames stay what they were
        empty_draw = np.random.default_rng([self.seed, int(stream), int(index), 1]).random()
        empty = c.empty_prob > 0 and empty_draw < c.empty_prob
        objects = [] if empty else list(self.objects)
        n_obj = len(objects)
        best = None
        for attempt in range(1, c.max_tries + 1):
            placement = c.placement
            if placement == "mixed":
                placement = "table" if rng.random() < c.table_prob else "floating"
            n_shapes = int(rng.integers(1 if empty else 0, max(1, c.distractors) + 1 if empty else c.distractors + 1))
            shapes = [make_distractor(rng) for _ in range(n_shapes)]
            order = objects + shapes
            if placement == "table":
                poses, plane = self._table_scene(rng, order)
                background = random_background(rng, c.height, c.width)
            else:
                poses, plane = self._floating_scene(rng, order)
                background = random_background(rng, c.height, c.width)
            # cheap pre-check: every catalogue object's centre projects into the image, in front of the camera
            centres = np.array([t for _, _, t in poses[:n_obj]]).reshape(-1, 3)
            uv = centres[:, :2] / centres[:, 2:3] * np.diag(c.K)[:2] + c.K[:2, 2]
            if (centres[:, 2] <= 0.05).any() or (uv < 0).any() or (uv[:, 0] >= c.width).any() or (
                    uv[:, 1] >= c.height).any():
                continue
            res = self.renderer.render(poses, background=background, light=self._light(rng), plane=plane)
            vis = np.array(res.visib_fract[:n_obj])
            npx = np.array([m.sum() for m in res.masks_visib[:n_obj]])
            ok = bool((vis >= c.min_visib_fract).all() and (npx >= c.min_visib_pixels).all())
            best = (res, poses, placement, attempt, ok)
            if ok:
                break
        if best is None:
            raise RuntimeError(
                f"frame {index}: no draw in {c.max_tries} tries put every object into the image; "
                "check the distance range and intrinsics"
            )
        res, poses, placement, attempt, ok = best
        rgb = res.rgb
        if c.blur_prob > 0 and rng.random() < c.blur_prob:
            rgb = cv2.GaussianBlur(rgb, (0, 0), float(rng.uniform(0.4, 1.0)))
        sigma = rng.uniform(0.0, c.noise_std) if c.noise_std > 0 else 0.0
        if sigma > 0:
            noise = rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(sigma)
            rgb = np.clip(rgb.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        gts = []
        for i, (obj, R, t) in enumerate(poses[:n_obj]):
            m = res.masks_visib[i]
            bbox = _bbox_xywh(m)
            gts.append(GroundTruthPose(obj_id=int(obj.class_id), name=obj.name, R=np.asarray(R), t=np.asarray(t),
                                       visib_fract=float(res.visib_fract[i]), mask=m, bbox_visib=bbox))
        return SyntheticFrame(rgb, res.depth, c.K.copy(), gts, res.masks_visib[:n_obj], res.masks_full[:n_obj],
                              placement, attempt, ok)


def _bbox_xywh(mask: np.ndarray) -> np.ndarray:
    """BOP-style [x, y, w, h] of a mask; [-1, -1, -1, -1] when empty (as BOP writes it)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.array([-1, -1, -1, -1])
    return np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])


@dataclass
class SynthSummary:
    split: str
    frames: int
    objects: int
    rejected_draws: int  # draws thrown away for low visibility
    below_threshold: int  # frames kept after max_tries with an object under the thresholds
    mean_visib_fract: float
    seconds: float


def write_split(generator: SceneGenerator, root, split: str, frames: int, stream: int,
                frames_per_scene: int = 1000, progress: bool = True) -> SynthSummary:
    """Render ``frames`` frames of ``stream`` into the BOP split ``root/split`` with BopWriter."""
    import time

    from tqdm import tqdm

    from .bop import BopWriter

    t0 = time.perf_counter()
    rejected = below = n_instances = 0
    visib = []
    catalogue = Catalogue(list(generator.objects))
    with BopWriter(Path(root), split, K_default=generator.config.K, catalogue=catalogue) as writer:
        for i in tqdm(range(frames), desc=f"synth {split}", unit="frame", disable=not progress):
            fr = generator.frame(i, stream)
            rejected += fr.tries - 1
            below += int(not fr.accepted)
            visib += [g.visib_fract for g in fr.gts]
            n_instances += len(fr.gts)
            writer.add_frame(i // frames_per_scene, i % frames_per_scene, fr.rgb, fr.depth, fr.K, fr.gts,
                             masks_visib=fr.masks_visib, masks=fr.masks_full)
    return SynthSummary(split, frames, n_instances, rejected, below,
                        float(np.mean(visib)) if visib else 0.0, time.perf_counter() - t0)
