"""Object symmetries and their algebra, in one place: the BOP-style :class:`Symmetry`, its transforms
(discretised as the BOP toolkit does, for the metrics), the symmetric equivalent of a pose nearest a
reference (tracking) or fixed by the view (training targets), and plain tables for the learned losses.

A symmetry transform S (4x4, object frame) leaves the object's appearance unchanged, so a pose (R, t)
and (R, t) o S look alike: R' = R S_R, t' = t + R S_t."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

MAX_SYM_DISC_STEP = 0.01  # BOP's max_sym_disc_step


@dataclass
class Symmetry:
    """An object's symmetries, BOP style (``models_info.json``), in metres.

    ``transforms`` are the discrete symmetry transforms *without* the identity;
    ``axis``/``offset`` describe one continuous rotational symmetry. BOP allows
    both at once (e.g. T-LESS: a continuous axis plus a flip), so ``kind`` is
    "continuous" whenever an axis is set, whether or not transforms are present.
    """

    kind: str = "none"  # none | discrete | continuous
    transforms: list[np.ndarray] = field(default_factory=list)  # discrete 4x4, metres
    axis: np.ndarray | None = None  # continuous
    offset: np.ndarray | None = None

    @property
    def is_symmetric(self) -> bool:
        return self.kind != "none"

    @property
    def continuous_axis(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(unit axis, a point on it) of the continuous symmetry, or None."""
        if self.kind != "continuous" or self.axis is None:
            return None
        a = np.asarray(self.axis, dtype=float)
        return a / np.linalg.norm(a), np.zeros(3) if self.offset is None else np.asarray(self.offset, dtype=float)

    def to_bop(self) -> dict:
        """The ``models_info.json`` symmetry fields (millimetres)."""
        info: dict = {}
        if self.transforms:
            flat = []
            for T in self.transforms:
                T = np.asarray(T, dtype=float).reshape(4, 4).copy()
                T[:3, 3] *= 1000.0
                flat.append([float(v) for v in T.reshape(-1)])
            info["symmetries_discrete"] = flat
        if self.kind == "continuous" and self.axis is not None:
            offset = np.zeros(3) if self.offset is None else np.asarray(self.offset, dtype=float)
            info["symmetries_continuous"] = [
                {"axis": [float(v) for v in self.axis], "offset": [float(v) * 1000.0 for v in offset]}
            ]
        return info

    @classmethod
    def from_bop(cls, info: dict) -> Symmetry:
        """Read BOP's ``symmetries_discrete`` (flattened 4x4, mm) and ``symmetries_continuous`` (axis, offset mm).

        BOP allows several continuous axes; only the first is kept (no BOP dataset has more than one).
        """
        transforms = []
        for flat in info.get("symmetries_discrete", []) or []:
            T = np.asarray(flat, dtype=float).reshape(4, 4).copy()
            T[:3, 3] /= 1000.0
            transforms.append(T)
        cont = info.get("symmetries_continuous", []) or []
        if cont:
            axis = np.asarray(cont[0]["axis"], dtype=float)
            offset = np.asarray(cont[0].get("offset", [0, 0, 0]), dtype=float) / 1000.0
            return cls("continuous", transforms, axis, offset)
        return cls("discrete" if transforms else "none", transforms)


def symmetry_from_spec(spec: dict | None, where="") -> Symmetry:
    """A :class:`Symmetry` from a catalogue YAML ``symmetry:`` mapping; ValueError naming ``where`` when bad."""
    spec = spec or {}
    kind = spec.get("type", "none")
    if kind not in ("none", "discrete", "continuous"):
        raise ValueError(f"{where}symmetry type must be none, discrete or continuous; got {kind!r}")
    if kind == "continuous" and "axis" not in spec:
        raise ValueError(f"{where}a continuous symmetry needs an 'axis' (e.g. axis: [0, 0, 1])")
    transforms = [np.asarray(T, dtype=float).reshape(4, 4) for T in spec.get("transforms", []) or []]
    if kind == "discrete" and not transforms:
        raise ValueError(f"{where}a discrete symmetry needs 'transforms' (4x4 matrices in metres, identity excluded)")
    return Symmetry(
        kind=kind,
        transforms=transforms,
        axis=np.asarray(spec["axis"], dtype=float) if "axis" in spec else None,
        offset=np.asarray(spec.get("offset", [0, 0, 0]), dtype=float),
    )


# -- transforms (metrics) -------------------------------------------------------------------------


def symmetry_array(syms) -> np.ndarray:
    """(S, 4, 4) from an array, a list of 4x4, or BOP's list of {"R", "t"} dicts; identity when empty."""
    if syms is None:
        return np.eye(4)[None]
    if isinstance(syms, np.ndarray):
        return syms.reshape(-1, 4, 4).astype(float)
    out = []
    for s in syms:
        if isinstance(s, dict):
            T = np.eye(4)
            T[:3, :3] = np.asarray(s["R"], float).reshape(3, 3)
            T[:3, 3] = np.asarray(s["t"], float).reshape(3)
            out.append(T)
        else:
            out.append(np.asarray(s, float).reshape(4, 4))
    return np.stack(out) if out else np.eye(4)[None]


def symmetric_points(pts, syms) -> np.ndarray:
    """The model points under every symmetry transform (S, M, 3)."""
    S = symmetry_array(syms)
    pts = np.asarray(pts, float).reshape(-1, 3)
    return pts @ np.swapaxes(S[:, :3, :3], 1, 2) + S[:, None, :3, 3]  # matmul: 20x faster than the einsum


def symmetry_transformations(symmetry, max_sym_disc_step: float = MAX_SYM_DISC_STEP) -> np.ndarray:
    """An object's symmetry transforms (S, 4, 4), identity first, as BOP's ``get_symmetry_transformations``.

    ``symmetry`` is a :class:`Symmetry` (metres) or a BOP ``models_info`` entry (millimetres: the result is
    then in millimetres too). A continuous symmetry is discretised into ``ceil(pi / max_sym_disc_step)``
    rotations about its axis through its offset point, and each is combined with every discrete transform
    (R_c R_d, R_c t_d + t_c), as the toolkit does.
    """
    if isinstance(symmetry, dict):
        disc = [np.asarray(T, float).reshape(4, 4) for T in symmetry.get("symmetries_discrete", []) or []]
        cont = [(np.asarray(c["axis"], float), np.asarray(c["offset"], float)) for c in
                symmetry.get("symmetries_continuous", []) or []]
    else:
        disc = [np.asarray(T, float).reshape(4, 4) for T in symmetry.transforms]
        cont = []
        if symmetry.kind == "continuous" and symmetry.axis is not None:
            offset = np.zeros(3) if symmetry.offset is None else np.asarray(symmetry.offset, float)
            cont = [(np.asarray(symmetry.axis, float), offset)]
    disc = [np.eye(4)] + disc
    trans_cont = []
    for axis, offset in cont:
        n_steps = int(np.ceil(np.pi / max_sym_disc_step))
        step = 2.0 * np.pi / n_steps
        unit = axis / np.linalg.norm(axis)
        Rs = Rotation.from_rotvec(unit[None, :] * (np.arange(n_steps) * step)[:, None]).as_matrix()
        for R in Rs:
            T = np.eye(4)
            T[:3, :3] = R
            T[:3, 3] = -R @ offset + offset
            trans_cont.append(T)
    if not trans_cont:
        return np.stack(disc)
    return np.stack([Tc @ Td for Td in disc for Tc in trans_cont])


# -- symmetric equivalents of a pose --------------------------------------------------------------


def _turned_about_axis(R, t, axis, offset, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) o (rotation by ``theta`` about ``axis`` through ``offset``): p -> S (p - o) + o is a symmetry."""
    S = Rotation.from_rotvec(axis * theta).as_matrix()
    return R @ S, t + R @ (offset - S @ offset)


def _with_transform(R, t, T) -> tuple[np.ndarray, np.ndarray]:
    return R @ T[:3, :3], t + R @ T[:3, 3]


def _discrete_candidates(sym: Symmetry) -> list[np.ndarray]:
    return [np.eye(4)] + [np.asarray(T, dtype=float) for T in sym.transforms]


def closest_symmetric_pose(obj, R_ref, R, t) -> tuple[np.ndarray, np.ndarray]:
    """The symmetric equivalent of (R, t) whose rotation is nearest R_ref (the same appearance).

    Without this a symmetric object's estimates may flip between equivalent poses and look like
    rotation jumps. Continuous symmetry about axis a: the angle about a that maximises
    tr(R_ref^T R S(theta)) has a closed form (hand-written: Rodrigues' formula, then atan2).
    """
    R = np.asarray(R, dtype=float)
    t = np.asarray(t, dtype=float).reshape(3)
    sym = getattr(obj, "symmetry", None)
    if sym is None or not sym.is_symmetric:
        return R, t
    M = np.asarray(R_ref, dtype=float).T @ R
    if sym.kind == "continuous":
        a, o = sym.continuous_axis
        ax = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        # tr(M S) = cos(th) (tr M - a^T M a) + sin(th) tr(M [a]x) + a^T M a
        theta = np.arctan2(np.trace(M @ ax), np.trace(M) - a @ M @ a)
        return _turned_about_axis(R, t, a, o, theta)
    best = max(_discrete_candidates(sym), key=lambda T: np.trace(M @ T[:3, :3]))
    return _with_transform(R, t, best)


def canonical_pose(obj, R, t) -> tuple[np.ndarray, np.ndarray]:
    """The symmetric equivalent of (R, t) whose appearance-independent parts are fixed by the view
    (:func:`canonical_view` with the object's symmetry and bounding-box centre)."""
    return canonical_view(obj.symmetry, obj.bbox_center, R, t)


def canonical_view(sym: Symmetry | None, centre, R, t) -> tuple[np.ndarray, np.ndarray]:
    """The symmetric equivalent of (R, t) whose appearance-independent parts are fixed by the view, so that
    every equivalent pose maps to the same one.

    Continuous symmetry about axis a (through ``offset``): rotate about a so that a fixed object
    direction u (perpendicular to a) points as much as possible towards the camera. Discrete
    symmetries: of the identity and the symmetry transforms, take the one turning u most towards
    the camera. Asymmetric objects (``sym`` None or "none"): unchanged. ``centre``: the object's centre
    (object frame). (Hand-written: no library canonicalises poses.)
    """
    R = np.asarray(R, dtype=float)
    t = np.asarray(t, dtype=float).reshape(3)
    if sym is None or not sym.is_symmetric:
        return R, t
    to_cam = -R.T @ (R @ np.asarray(centre, dtype=float) + t)  # object frame: from the centre towards the camera
    to_cam /= max(np.linalg.norm(to_cam), 1e-12)
    if sym.kind == "continuous":
        a, o = sym.continuous_axis
        u = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        u /= np.linalg.norm(u)
        w = to_cam - np.dot(to_cam, a) * a
        if np.linalg.norm(w) < 1e-6:  # looking along the axis: any angle is as good; keep a fixed one
            w = u
        w /= np.linalg.norm(w)
        theta = np.arctan2(np.dot(a, np.cross(u, w)), np.dot(u, w))
        return _turned_about_axis(R, t, a, o, theta)
    cands = _discrete_candidates(sym)
    basis = np.eye(3)
    spread = [np.var([(T[:3, :3] @ e) for T in cands], axis=0).sum() for e in basis]
    u = basis[int(np.argmax(spread))]
    best = max(cands, key=lambda T: float(np.dot(T[:3, :3] @ u, to_cam)))
    return _with_transform(R, t, best)


def symmetry_tables(objects) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per object: the rotations of its discrete symmetries (identity first, padded with identity; O x S x
    3 x 3), its continuous-symmetry unit axis (O x 3, zero without one) and whether it has one (O,)."""
    objs = list(objects)
    n_sym = max(1 + len(o.symmetry.transforms) for o in objs)
    rots = np.tile(np.eye(3), (len(objs), n_sym, 1, 1))
    axes = np.zeros((len(objs), 3))
    cont = np.zeros(len(objs), dtype=bool)
    for i, o in enumerate(objs):
        for j, T in enumerate(o.symmetry.transforms):
            rots[i, 1 + j] = np.asarray(T, dtype=float)[:3, :3]
        if o.symmetry.kind == "continuous" and o.symmetry.axis is not None:
            axes[i] = np.asarray(o.symmetry.axis, dtype=float) / np.linalg.norm(o.symmetry.axis)
            cont[i] = True
    return rots, axes, cont
