"""Error plots: cumulative ADD(-S) accuracy and error histograms of every backend on the same axes, and the
training curves."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .figure_style import _FALLBACK_COLORS, BACKEND_COLORS, _plt, _save, backend_color


@dataclass
class ErrorSamples:
    """Per ground-truth instance errors of one backend (missed instances: inf / nan)."""

    objects: list[str]
    add_s_mm: np.ndarray  # ADD for asymmetric objects, ADD-S for symmetric ones; inf when missed
    re_deg: np.ndarray  # nan when missed
    te_mm: np.ndarray  # nan when missed


def error_figure(path, samples: dict[str, ErrorSamples], diameters_mm: dict[str, float],
                 stats: dict[str, dict] | None = None, max_threshold_mm: float = 100.0, dpi: int = 100) -> Path:
    """Cumulative ADD(-S) accuracy (0 to max_threshold_mm) and error histograms for every backend.

    ``stats`` (backend -> the evaluator's overall report) supplies the numbers quoted in the
    legends, so the figure never disagrees with the table (nothing is recomputed here).
    """
    plt = _plt()
    fig, (a_cum, a_re, a_te) = plt.subplots(1, 3, figsize=(18, 5.4), dpi=dpi)
    thr = np.linspace(0.0, max_threshold_mm, 401)
    re_all = [s.re_deg[np.isfinite(s.re_deg)] for s in samples.values()]
    te_all = [s.te_mm[np.isfinite(s.te_mm)] for s in samples.values()]
    re_top = _hist_top(re_all, 180.0)
    te_top = _hist_top(te_all, None)
    for k, (b, s) in enumerate(samples.items()):
        color = backend_color(b, k)
        st = (stats or {}).get(b, {})
        e = np.asarray(s.add_s_mm, float)
        n = max(len(e), 1)
        acc = [(e < x).sum() / n for x in thr]  # strict, as the evaluator's accuracies
        a_cum.plot(thr, acc, color=color, lw=2.2,
                   label=f"{b}:{_fmt(' ADD(-S)-0.1d {:.2f},', st.get('add_s_01d_acc'))} n={len(e)}")
        re, te = re_all[k], te_all[k]
        a_re.hist(np.clip(re, 0, re_top), bins=36, range=(0, re_top), histtype="stepfilled", alpha=0.3, color=color)
        a_re.hist(np.clip(re, 0, re_top), bins=36, range=(0, re_top), histtype="step", lw=2, color=color,
                  label=f"{b}: {len(re)} matched{_fmt(', median {:.1f} deg', st.get('rot_err_median_deg'))}")
        a_te.hist(np.clip(te, 0, te_top), bins=40, range=(0, te_top), histtype="stepfilled", alpha=0.3, color=color)
        a_te.hist(np.clip(te, 0, te_top), bins=40, range=(0, te_top), histtype="step", lw=2, color=color,
                  label=f"{b}: {len(te)} matched{_fmt(', median {:.1f} mm', st.get('trans_err_median_mm'))}")
    for k, (name, d) in enumerate(sorted(diameters_mm.items())):
        x = 0.1 * d
        if x <= max_threshold_mm:
            a_cum.axvline(x, color="0.35", ls=(0, (4, 2 + 2 * k)), lw=1.3, label=f"0.1 d {name} ({x:.1f} mm)")
    a_cum.set_xlim(0, max_threshold_mm)
    a_cum.set_ylim(0, 1.02)
    a_cum.set_xlabel("threshold (mm)")
    a_cum.set_ylabel("fraction of instances with ADD(-S) < threshold")
    a_cum.set_title("cumulative ADD(-S) accuracy")
    a_cum.grid(alpha=0.3)
    a_cum.legend(loc="lower right")
    a_re.set_xlabel("rotation error (deg)" + (f" (last bin: >= {re_top:.0f})" if re_top < 180 else ""))
    a_re.set_ylabel("instances")
    a_re.set_title("rotation error")
    a_re.legend(loc="upper right")
    a_te.set_xlabel(f"translation error (mm) (last bin: >= {te_top:.0f})")
    a_te.set_ylabel("instances")
    a_te.set_title("translation error")
    a_te.legend(loc="upper right")
    fig.suptitle("error distributions (matched instances; missed ones count as failures in the curve)")
    fig.subplots_adjust(left=0.05, right=0.99, top=0.86, bottom=0.12, wspace=0.22)
    return _save(fig, path)


def _fmt(template: str, value, suffix: str = "") -> str:
    return "" if value is None else template.format(value) + suffix


def _hist_top(values: list[np.ndarray], cap: float | None) -> float:
    """Histogram range end: the 95th percentile over all backends (rounded up), so outliers share a last bin."""
    allv = np.concatenate([v for v in values if len(v)] or [np.zeros(1)])
    top = float(np.percentile(allv, 95)) * 1.15 if len(allv) else 1.0
    top = max(top, 1.0)
    mag = 10 ** np.floor(np.log10(top))
    top = float(np.ceil(top / mag) * mag)
    return min(top, cap) if cap else top


def training_curves(path, history: list[dict], title: str = "", dpi: int = 100) -> Path:
    """Learning curves from a training record: the training loss beside the loss on fresh augmentations of
    validation frames, and per object the validation ADD(-S)-0.1d and median rotation error, RGB-only
    (solid) and with the depth stage (dashed)."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=dpi)
    ax = axes[0]
    ax.plot(epochs, [h.get("loss", np.nan) for h in history], "-o", ms=3, label="training (fitted samples)")
    ax.plot(epochs, [(h.get("val_fresh") or {}).get("loss", np.nan) for h in history], "-o", ms=3,
            label="validation frames, fresh augmentation")
    ax.set(xlabel="epoch", ylabel="loss", title="loss", yscale="log")
    ax.legend(fontsize=8)
    names = sorted({n for h in history for key in ("val", "val_depth")
                    for n in ((h.get(key) or {}).get("objects") or {})})
    for name, color in zip(names, _FALLBACK_COLORS + list(BACKEND_COLORS.values())):
        for key, style, label in (("val", "-", "RGB"), ("val_depth", "--", "RGB-D")):
            obj = [((h.get(key) or {}).get("objects") or {}).get(name) or {} for h in history]
            if not any(obj):
                continue
            acc = [np.nan if o.get("add_s_01d_acc") is None else 100 * o["add_s_01d_acc"] for o in obj]
            rot = [np.nan if o.get("rot_err_median_deg") is None else o["rot_err_median_deg"] for o in obj]
            axes[1].plot(epochs, acc, style, color=color, marker="o", ms=3, label=f"{name} {label}")
            axes[2].plot(epochs, rot, style, color=color, marker="o", ms=3, label=f"{name} {label}")
    axes[1].set(xlabel="epoch", ylabel="%", title="validation ADD(-S) < 0.1 d", ylim=(0, 100))
    axes[2].set(xlabel="epoch", ylabel="degrees", title="validation median rotation error", ylim=(0, 180))
    for ax in axes[1:]:
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
