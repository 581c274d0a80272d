"""The benchmark's printed summary: per-stage and ROS tables, the other sections, and the issues' targets."""
from __future__ import annotations


def pipeline_lines(key: str, r: dict) -> str:
    lines = []
    for prec, p in r["precision"].items():
        lines.append(f"  {key} {prec}: e2e in-process {p['e2e_inproc_ms']['median']:.1f} ms, backbone alone "
                     f"{p['backbone_alone_ms']['median']:.1f} ms, ratio {p['ratio_e2e_inproc_to_backbone']}, "
                     f"{p['backbone_images_per_frame']} backbone images/frame")
    return "\n".join(lines)


def ros_line(key: str, r: dict) -> str:
    lat = r.get("latency_ms") or {}
    ls = r.get("lockstep") or {}
    mem = (r.get("memory_end") or {}).get("peak_rss_mb")
    node = r.get("node") or {}
    return (f"  {key} through ROS: p50 {lat.get('p50')} ms, p95 {lat.get('p95')} ms, lost {r.get('lost')}, "
            f"latency / backbone alone {r.get('ratio_latency_to_backbone')}; in the node: inference p50 "
            f"{node.get('inference_median_ms')} ms, received -> published p50 {node.get('latency_p50_ms')} ms; "
            f"lockstep {ls.get('fps')} frames/s; pose node peak RSS {mem} MB")


def targets(res: dict) -> list[dict]:
    """The issue's targets, each with the measured value and whether it is met (None: not measured)."""
    out = []

    def add(name, value, limit, op, note=""):
        ok = None if value is None else (value <= limit if op == "<=" else value < limit if op == "<"
                                         else value >= limit if op == ">=" else value == limit)
        out.append({"target": name, "value": value, "limit": f"{op} {limit}", "met": ok, "note": note})

    for b, label in (("dinov2", "DINOv2 ViT-B/14 224"), ("clip", "CLIP ViT-B/32")):
        key = f"{b}/real"
        p = res.get("pipeline", {}).get(key, {}).get("precision", {}).get("fp32")
        r = res.get("ros", {}).get(key)
        if p is None and r is None:
            continue
        if r is not None:
            add(f"{label}: ROS e2e / backbone alone (median of per-frame ratios, fp32)",
                r.get("ratio_latency_to_backbone"), 1.2, "<=",
                f"{p['backbone_images_per_frame']} backbone images per frame" if p else "")
            # a two-stage pipeline runs the backbone on several images per frame: the node reports the backbone
            # time its estimator spent on these same frames, so this ratio is free of run-to-run drift
            add(f"{label}: ROS e2e p50 / the node's own backbone time per frame (fp32, same frames)",
                r.get("ratio_latency_to_node_backbone"), 1.2, "<=",
                f"{p['backbone_images_per_frame']} backbone images per frame" if p else "")
        rt = res.get("ros", {}).get(f"{key}+tracking")
        if rt is not None:
            node = rt.get("node") or {}
            add(f"{label}: ROS e2e / backbone alone, tracking mode (tracks' boxes, one crop pass; RGB, fp32)",
                rt.get("ratio_latency_to_backbone"), 1.2, "<=",
                f"frames in tracking mode (roi) {node.get('frames_roi')}, full {node.get('frames_estimated')}")
        if p:
            add(f"{label}: in-process e2e / backbone alone (fp32)", p["ratio_e2e_inproc_to_backbone"], 1.2, "<=")
            ext = p.get("external_box")
            if ext:
                add(f"{label}: in-process e2e / backbone, external 2D box (one crop)",
                    ext["ratio_e2e_inproc_to_backbone"], 1.2, "<=")
        if r:
            add(f"{label}: pose node peak RSS (MB)", (r.get("memory_end") or {}).get("peak_rss_mb"), 2048, "<")
    t = res.get("transport", {}).get("reliable")
    if t:
        add("VGA convert + publish + receive p50 (ms)", t["latency_ms"].get("p50"), 3.0, "<")
    ev = res.get("evaluator", {}).get("driller_like")
    if ev:
        add("evaluator frames/s (1 object, 2k points)", ev["frames_per_s"], 500, ">=")
    so = res.get("soak")
    if so:
        add("soak: pose node RSS growth (MB)", so["rss"]["pose_node"].get("growth_mb"), 50, "<",
            f"{so['frames']} frames {so['size']}")
        add("soak: evaluator RSS growth (MB)", so["rss"]["evaluator"].get("growth_mb"), 50, "<")
        add("soak: lost frames (lockstep)", so.get("lost_frames"), 0, "==")
    if res.get("device", "cpu").startswith("cuda"):
        r = res.get("ros", {}).get("dinov2/real", {})
        lat = r.get("latency_ms", {}).get("p50")
        add("GPU DINOv2 ViT-B/14 fp16 e2e frames/s", round(1e3 / lat, 1) if lat else None, 150, ">=")
    from .phantom import phantom_targets

    return out + phantom_targets(res.get("phantom"))


def _fmt(v, nd=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _pipeline_tables(pl: dict) -> list[str]:
    """The in-process stage table and, where measured, the batch table."""
    from .pipeline import STAGE_ORDER

    lines: list[str] = []
    seen = {c for r in pl.values() for p in r["precision"].values() for c in p["stages_ms"]}
    cols = [c for c in STAGE_ORDER if c in seen]
    head = ["variant", "prec"] + cols + ["e2e", "e2e cpu", "bb alone", "bb cpu", "bb 1thr", "ratio", "bb img/f",
                                         "e2e/bb-in-pipe", "1-box e2e", "1-box ratio"]
    rows = []
    for key, r in pl.items():
        for prec, p in r["precision"].items():
            ext = p.get("external_box") or {}
            rows.append([key, prec] + [_fmt(p["stages_ms"].get(c)) for c in cols] + [
                _fmt(p["e2e_inproc_ms"]["median"]), _fmt(p.get("e2e_inproc_cpu_ms_median")),
                _fmt(p["backbone_alone_ms"]["median"]), _fmt(p["backbone_alone_ms"].get("cpu_ms_median")),
                _fmt((p.get("backbone_alone_1thread_ms") or {}).get("median")),
                _fmt(p["ratio_e2e_inproc_to_backbone"], 2), _fmt(p["backbone_images_per_frame"], 0),
                _fmt(p.get("ratio_e2e_inproc_to_pipeline_backbone"), 2),
                _fmt((ext.get("e2e_inproc_ms") or {}).get("median")),
                _fmt(ext.get("ratio_e2e_inproc_to_backbone"), 2)])
    lines += ["", "In-process stages, median ms per frame (bb = backbone alone, batch 1, same side and precision; "
                  "cpu = process CPU time; bb 1thr = backbone alone on one torch thread; ratio = e2e / bb alone; "
                  "e2e/bb-in-pipe = e2e / backbone time of all the pipeline's passes; 1-box = one external "
                  "2D box, a single crop pass)", _table(head, rows)]
    batch_rows = [[key] + [_fmt((b.get(n) or {}).get("ms_per_frame")) for n in ("1", "4")]
                  + [_fmt((b.get("4") or {}).get("speedup_vs_batch_1"), 2)]
                  for key, r in pl.items() if (b := r["precision"].get("fp32", {}).get("batch"))]
    if batch_rows:
        lines += ["", "Batch inference (n cameras in one predict_batch call; RGB, fp32): ms per frame",
                  _table(["variant", "batch 1", "batch 4", "speed-up"], batch_rows)]
    return lines


def _ros_tables(ros: dict) -> list[str]:
    """The through-ROS table and the node's own stage medians."""
    lines: list[str] = []
    head = ["variant", "p50 ms", "p95 ms", "bb alone ms", "ratio", "node infer ms", "node bb ms", "ratio node bb",
            "lost", "lockstep fps", "answered", "startup s", "RSS loaded MB", "peak RSS MB"]
    rows = []
    for key, r in ros.items():
        lat, ls, node = r.get("latency_ms") or {}, r.get("lockstep") or {}, r.get("node") or {}
        rows.append([key, _fmt(lat.get("p50")), _fmt(lat.get("p95")),
                     _fmt((r.get("backbone_alone_ms") or {}).get("median")),
                     _fmt(r.get("ratio_latency_to_backbone"), 2), _fmt(node.get("inference_median_ms")),
                     _fmt(node.get("backbone_median_ms")), _fmt(r.get("ratio_latency_to_node_backbone"), 2),
                     _fmt(r.get("lost")), _fmt(ls.get("fps")),
                     f"{ls.get('frames_answered')}/{ls.get('frames_sent')}" if ls else "-",
                     _fmt(r.get("startup_s")),
                     _fmt((r.get("memory_after_load") or {}).get("rss_mb")),
                     _fmt((r.get("memory_end") or {}).get("peak_rss_mb"))])
    lines += ["", "Through ROS (pose node process, real DDS): image published -> detections received; bb alone = "
                  "the same backbone in the bench process right after each frame; ratio = median per-frame "
                  "latency / bb; node infer / node bb = the node's own medians over the same frames (estimator "
                  "call, backbone time within it); +tracking = a still scene, tracking on, RGB only",
              _table(head, rows)]
    stage_names = list(dict.fromkeys(n for r in ros.values() for n in ((r.get("node") or {}).get("stages_ms")
                                                                       or {})))
    if stage_names:
        rows = [[key, *(_fmt(((r.get("node") or {}).get("stages_ms") or {}).get(n)) for n in stage_names)]
                for key, r in ros.items()]
        lines += ["", "Inside the pose node over the same frames: the estimator's stage medians, ms per frame "
                      "(/diagnostics stage_<name>_median_ms; 0 where a stage did not run on a frame)",
                  _table(["variant", *stage_names], rows)]
    return lines


def _other_rows(res: dict) -> list[list[str]]:
    """One row per result of the transport, evaluator, renderer, soak and phantom sections."""
    other = []
    for q, t in (res.get("transport") or {}).items():
        lat = t["latency_ms"]
        other.append([f"VGA transport ({q})", f"p50 {_fmt(lat.get('p50'), 2)} ms, p95 {_fmt(lat.get('p95'), 2)} ms, "
                                               f"lost {t['lost']}/{t['frames_sent']}"])
    for name, e in (res.get("evaluator") or {}).items():
        if isinstance(e, dict):
            other.append([f"evaluator {name} ({e['model_points']} pts, {e['symmetry']})",
                          f"{e['frames_per_s']} frames/s; node Scorer {e['node_scorer_frames_per_s']} frames/s; "
                          f"report() {e['report_ms']} ms at {e['instances_in_report']} instances"])
    if res.get("renderer"):
        r = res["renderer"]
        other.append([f"renderer ({r['faces']} faces, {r['size']})", f"{r['frames_per_s']} frames/s"])
    if res.get("soak"):
        so = res["soak"]
        rss = so["rss"]
        other.append([f"soak ({so['frames']} frames {so['size']}, {so['backend']})",
                      f"lost {so['lost_frames']}, player {so['player'].get('fps')} frames/s, RSS growth pose "
                      f"{rss['pose_node'].get('growth_mb')} MB, evaluator {rss['evaluator'].get('growth_mb')} MB"])
    from .phantom import phantom_rows

    other += phantom_rows(res.get("phantom"))
    return other


def format_tables(res: dict) -> str:
    """The printed summary: per-stage table, ROS table, other sections, targets."""
    m = res["machine"]
    lines = ["", f"machine: {m.get('cpu_model')} ({m.get('cpu_count')} CPUs, torch threads {m.get('torch_threads')}), "
                 f"device {res.get('device')}, load average before {m.get('load_average')} after "
                 f"{m.get('load_average_after')}"]
    lines += _pipeline_tables(res.get("pipeline", {})) if res.get("pipeline") else []
    lines += _ros_tables(res.get("ros", {})) if res.get("ros") else []
    other = _other_rows(res)
    if other:
        lines += ["", _table(["section", "result"], other)]
    if res.get("targets"):
        rows = [[t["target"], _fmt(t["value"], 3), t["limit"],  # 3 places: 0.015 must not read as its limit 0.01
                 {True: "met", False: "MISSED", None: "n/a"}[t["met"]]] for t in res["targets"]]
        lines += ["", "Targets (issues 9, 10, 22)", _table(["target", "value", "limit", ""], rows)]
    bad = {k: v for k, v in res.get("sections", {}).items() if v["status"] != "ok"}
    if bad:
        lines += ["", "Sections not completed:"] + [f"  {k}: {v['status']} {v.get('error') or v.get('note', '')}"
                                                    for k, v in bad.items()]
    times = ", ".join(f"{k} {v['seconds']:.0f}s" for k, v in res.get("sections", {}).items())
    lines += ["", f"section times: {times}"]
    return "\n".join(lines)


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])
