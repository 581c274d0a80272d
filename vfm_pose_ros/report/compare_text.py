"""The comparison report as text: the terminal table, the Markdown tables (the paper's Table I and ours), the
generated reading of the numbers, the Markdown document and its HTML page."""
from __future__ import annotations

import html
import json
import math
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .compare import BackendResult


def _num(v, fmt: str = "{:.1f}", scale: float = 1.0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return fmt.format(v * scale)


def _pct(v) -> str:
    return _num(v, "{:.1f}", 100.0)


def format_table(results_json: dict) -> str:
    """A fixed-width terminal table of a results.json dict (the paper's Table I columns first)."""
    cols = [("backend", "backend", None), ("object", "object", None),
            ("ADD mm", "add_mean_mm", "{:.1f}"), ("rot deg", "rot_err_mean_deg", "{:.1f}"),
            ("trans mm", "trans_err_mean_mm", "{:.1f}"), ("ADD-S mm", "adds_mean_mm", "{:.1f}"),
            ("ADD(-S).1d %", "add_s_01d_acc", "%"), ("BOP AR", "bop19_average_recall", "{:.3f}"),
            ("5cm5deg %", "acc_5cm5deg", "%"),
            ("AUC ADD-S", "auc_adds", "{:.3f}"), ("found", None, "found"),
            ("lat ms", "latency_mean_ms", "{:.1f}"), ("p95 ms", "latency_p95_ms", "{:.1f}"),
            ("fps", "throughput_fps", "{:.2f}")]
    body = []
    for r in results_json["table"]:
        cells = []
        for _, key, fmt in cols:
            if fmt is None:
                cells.append(str(r[key]))
            elif fmt == "%":
                cells.append(_pct(r.get(key)))
            elif fmt == "found":
                cells.append(f"{r['n_predicted']}/{r['n_gt']}")
            else:
                cells.append(_num(r.get(key), fmt))
        body.append(cells)
    heads = [h for h, _, _ in cols]
    widths = [max([len(h)] + [len(c[i]) for c in body]) for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(heads), "-" * len(line(heads))]
    prev = None
    for cells in body:
        if prev is not None and cells[0] != prev:
            out.append("")
        out.append(line(cells))
        prev = cells[0]
    return "\n".join(out)


def print_table(results_json: dict, file=None) -> None:
    """Print the comparison table and where the report is."""
    file = file or sys.stdout
    print(format_table(results_json), file=file)
    s = results_json.get("settings", {})
    if s.get("n_frames") is not None:
        print(f"\n{s['n_frames']} frames of {s.get('source', '?')}; latency per frame on {s.get('device', '?')}",
              file=file)


def markdown_tables(rows: list[dict]) -> str:
    """Table 1 (the paper's Table I: ADD, rotation and translation error) and Table 2 (ours)."""
    t1 = ["| Backend | Object | ADD (mm) mean / median | Rotation error (deg) mean / median "
          "| Translation error (mm) mean / median |",
          "|---|---|---:|---:|---:|"]
    t2 = ["| Backend | Object | found / GT | ADD-S (mm) mean | ADD-0.1d | ADD(-S)-0.1d | BOP AR | 5 cm 5 deg "
          "| AUC ADD | AUC ADD-S | AR VSD | AR MSSD | AR MSPD | latency mean / p95 (ms) | throughput (frames/s) |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        bo = f"| {r['backend']} | {r['object']} "
        t1.append(bo + f"| {_num(r['add_mean_mm'])} / {_num(r['add_median_mm'])} "
                  f"| {_num(r['rot_err_mean_deg'])} / {_num(r['rot_err_median_deg'])} "
                  f"| {_num(r['trans_err_mean_mm'])} / {_num(r['trans_err_median_mm'])} |")
        t2.append(bo + f"| {r['n_predicted']} / {r['n_gt']} | {_num(r['adds_mean_mm'])} "
                  f"| {_pct(r['add_01d_acc'])} % | {_pct(r['add_s_01d_acc'])} % "
                  f"| {_num(r.get('bop19_average_recall'), '{:.3f}')} | {_pct(r['acc_5cm5deg'])} % "
                  f"| {_num(r['auc_add'], '{:.3f}')} | {_num(r['auc_adds'], '{:.3f}')} "
                  f"| {_num(r.get('bop19_average_recall_vsd'), '{:.3f}')} "
                  f"| {_num(r['mssd_recall'], '{:.3f}')} | {_num(r['mspd_recall'], '{:.3f}')} "
                  f"| {_num(r['latency_mean_ms'])} / {_num(r['latency_p95_ms'])} "
                  f"| {_num(r['throughput_fps'], '{:.2f}')} |")
    return ("**Table 1.** Pose errors (the paper's Table I; lower is better). Means and medians over the "
            "ground-truth instances that received a prediction.\n\n" + "\n".join(t1) +
            "\n\n**Table 2.** Accuracies (fraction of all ground-truth instances; a missed instance is a "
            "failure), BOP average recalls (BOP AR = mean of the VSD, MSSD and MSPD recalls; '-' without depth), and "
            "speed per frame.\n\n" + "\n".join(t2) + "\n")


def reading(results: list[BackendResult], n_frames: int) -> str:
    """One paragraph saying what the numbers show, and how far they can be trusted (generated, not tuned)."""
    if not results:
        return "No backend was run."
    ov = {b.name: b.report["overall"] for b in results}
    lat = {b.name: b.latency for b in results}
    n_gt = max(o["n_gt"] for o in ov.values())
    parts = []

    def acc(b):
        return ov[b]["add_s_01d_acc"] if ov[b]["add_s_01d_acc"] is not None else -1.0

    ranked = sorted(ov, key=lambda b: (-acc(b), ov[b]["add_mean_mm"] if ov[b]["add_mean_mm"] is not None else 1e18))
    desc = "; ".join(
        f"{b} {_pct(ov[b]['add_s_01d_acc'])} % ADD(-S)-0.1d, mean ADD {_num(ov[b]['add_mean_mm'])} mm "
        f"(median {_num(ov[b]['add_median_mm'])}), rotation {_num(ov[b]['rot_err_mean_deg'])} deg "
        f"(median {_num(ov[b]['rot_err_median_deg'])}), translation {_num(ov[b]['trans_err_mean_mm'])} mm"
        for b in ranked)
    parts.append(f"On {n_frames} frames ({n_gt} ground-truth instances): {desc}.")
    if len(ranked) > 1:
        best, second = ranked[0], ranked[1]
        if acc(best) == acc(second):
            parts.append(f"{best} and {second} are tied on ADD(-S)-0.1d.")
        else:
            parts.append(f"{best} is the more accurate backend here by ADD(-S)-0.1d "
                         f"({_pct(acc(best))} % vs {_pct(max(acc(second), 0))} %).")
        if "clip" in ov and "dinov2" in ov and ov["clip"]["add_mean_mm"] is not None \
                and ov["dinov2"]["add_mean_mm"] is not None:
            agrees = ov["dinov2"]["add_mean_mm"] < ov["clip"]["add_mean_mm"]
            parts.append("The ordering on mean ADD " + ("agrees with" if agrees else "differs from") +
                         " the paper's Table I, where DINOv2's geometric features gave the lower pose errors "
                         "on the LineMOD driller.")
    missed = [f"{b} missed {o['n_gt'] - o['n_predicted']} of {o['n_gt']}" for b, o in ov.items()
              if o["n_predicted"] < o["n_gt"]]
    if missed:
        parts.append("Detections: " + ", ".join(missed) + " instances (counted as failures in the accuracies).")
    skewed = [b for b, o in ov.items() if o["add_mean_mm"] and o["add_median_mm"]
              and o["add_mean_mm"] > 2.0 * o["add_median_mm"]]
    if skewed:
        parts.append(f"For {', '.join(skewed)} the mean ADD is more than twice the median: a few gross failures "
                     "(flipped or far-off poses) dominate the means, so read the medians too.")
    timed = [b for b in lat if lat[b].get("latency_mean_ms")]
    if len(timed) > 1:
        fast = min(timed, key=lambda b: lat[b]["latency_mean_ms"])
        slow = max(timed, key=lambda b: lat[b]["latency_mean_ms"])
        if fast != slow:
            ratio = lat[slow]["latency_mean_ms"] / lat[fast]["latency_mean_ms"]
            parts.append(f"{fast} is {ratio:.1f}x faster than {slow} per frame "
                         f"({_num(lat[fast]['latency_mean_ms'])} vs {_num(lat[slow]['latency_mean_ms'])} ms mean).")
    if n_gt < 50:
        parts.append(f"With only {n_gt} instances these differences are indicative, not statistically solid.")
    parts.append("Absolute numbers depend on the checkpoints, data and hardware listed under Settings and are not "
                 "comparable with the paper's (pretrained ViT-B backbones on real LineMOD images); the comparison "
                 "between backends is fair because both ran on the same frames under the same conditions.")
    return " ".join(parts)


def _settings_md(settings: dict, results: list[BackendResult]) -> str:
    lines = []
    for k, v in settings.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v)
        lines.append(f"- **{k}**: {v}")
    for b in results:
        s = dict(b.settings)
        head = ", ".join(f"{k} {s.pop(k)}" for k in ("checkpoint", "device", "precision") if k in s)
        lines.append(f"- **{b.name}**: {head}")
        if "results_csv" in s:
            lines.append(f"  - results: `{s.pop('results_csv')}`"
                         + (f"; the same numbers from `{s.pop('eval_command')}`" if "eval_command" in s else ""))
        for k, v in s.items():
            lines.append(f"  - {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
        stages = b.latency.get("stages_mean_ms") or {}
        if stages:
            lines.append("  - mean stage times (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        lines.append(f"  - latency: {b.latency.get('how', '')}; throughput: {b.latency.get('throughput_how', '')}")
    return "\n".join(lines)


def render_markdown(doc: dict, results: list[BackendResult], captions: dict[str, str]) -> str:
    s = doc["settings"]
    names = ", ".join(b.name for b in results)
    md = [f"# Backend comparison: {names}", "",
          f"{s.get('n_frames')} frames of {s.get('source', 'the data')}; generated {s.get('date')}.", "",
          "## Results", "", markdown_tables(doc["table"]), "## Reading", "", doc["reading"], "", "## Figures", ""]
    order = [k for k in doc["figures"] if k.startswith("panel_")] + ["pointcloud", "multi_object", "errors"]
    for n, key in enumerate([k for k in order if k in doc["figures"]], start=1):
        md += [f"**Figure {n}.** {captions.get(key, key)}", "", f"![{key}]({doc['figures'][key]})", ""]
    if "pointcloud" not in doc["figures"]:
        md += ["(No point-cloud figure: none of the drawn frames has a depth image.)", ""]
    md += ["## Settings", "", _settings_md(s, results), "",
           "Metric definitions (vfm_pose_ros/core/metrics.py): " +
           "; ".join(f"{k}: {v}" for k, v in doc["metric_settings"].items()) + ".", "",
           "Files: `results.json` (everything above, per backend and object), `table.csv`, "
           + ", ".join(f"`{v}`" for v in doc["figures"].values()) + ".", ""]
    return "\n".join(md)


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1250px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; }}
th {{ background: #f2f2f2; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
code {{ background: #f4f4f4; padding: 0 0.2em; }}
</style></head><body>
{body}
</body></html>
"""


def markdown_to_html(md: str, title: str = "report") -> str:
    """report.md as a standalone HTML page (Python-Markdown with its tables extension; images stay relative)."""
    import markdown

    return _HTML.format(title=html.escape(title), body=markdown.markdown(md, extensions=["tables"]))
