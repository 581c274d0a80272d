"""The metrics report (core.metrics.PoseEvaluator's summary) as text: a fixed-width table for the terminal and
the same table in Markdown, alone or with a streamed evaluation's frame accounting."""
from __future__ import annotations

_TABLE = [  # (header, key, format)
    ("n_gt", "n_gt", "{:d}"), ("pred", "n_predicted", "{:d}"),
    ("ADD mm", "add_mean_mm", "{:.1f}"), ("ADD-S mm", "adds_mean_mm", "{:.1f}"),
    ("rot deg", "rot_err_mean_deg", "{:.2f}"), ("trans mm", "trans_err_mean_mm", "{:.1f}"),
    ("ADD.1d", "add_01d_acc", "{:.3f}"), ("ADD-S.1d", "adds_01d_acc", "{:.3f}"),
    ("ADD(-S).1d", "add_s_01d_acc", "{:.3f}"), ("BOP AR", "bop19_average_recall", "{:.3f}"),
    ("AUC ADD", "auc_add", "{:.3f}"),
    ("AUC ADD-S", "auc_adds", "{:.3f}"), ("5cm5deg", "acc_5cm5deg", "{:.3f}"),
    ("AR VSD", "bop19_average_recall_vsd", "{:.3f}"), ("AR MSSD", "mssd_recall", "{:.3f}"),
    ("AR MSPD", "mspd_recall", "{:.3f}"),
]


def format_report(report: dict) -> str:
    """A fixed-width table: one row per object, then the pooled overall row (mean errors, accuracies)."""
    rows = [(name, vals) for name, vals in report["objects"].items()] + [("overall", report["overall"])]
    name_w = max([6] + [len(n) for n, _ in rows])

    def cell(v, fmt):
        return "-" if v is None else fmt.format(v)

    widths = [max(len(h), 6) for h, _, _ in _TABLE]
    lines = [" ".join([f"{'object':<{name_w}}"] + [f"{h:>{w}}" for (h, _, _), w in zip(_TABLE, widths)])]
    lines.append("-" * len(lines[0]))
    for i, (name, vals) in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * len(lines[0]))
        cells = [f"{cell(vals.get(key), fmt):>{w}}" for (_, key, fmt), w in zip(_TABLE, widths)]
        lines.append(" ".join([f"{name:<{name_w}}"] + cells))
    return "\n".join(lines)


def format_report_markdown(report: dict) -> str:
    """The same table as :func:`format_report` in Markdown: one row per object, then overall."""
    rows = [(name, vals) for name, vals in report["objects"].items()] + [("**overall**", report["overall"])]
    lines = ["| object | " + " | ".join(h for h, _, _ in _TABLE) + " |",
             "|---|" + "|".join("---:" for _ in _TABLE) + "|"]
    for name, vals in rows:
        cells = ["-" if vals.get(key) is None else fmt.format(vals[key]) for _, key, fmt in _TABLE]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    """A streamed evaluation's report (``data.stream_evaluation.Scorer``) in Markdown: the per-object and overall
    rows, plus the ROS run's frame accounting."""
    lines = [format_report_markdown(report)]
    ros = report.get("ros", {})
    lines += ["", f"{report['n_frames']} frames scored; {ros.get('frames_matched', 0)} matched with detections, "
                  f"{len(ros.get('gaps', []))} without (failures), {ros.get('detections_without_ground_truth', 0)} "
                  f"detection messages without ground truth, {ros.get('detections_unknown_class', 0)} detections "
                  "of classes outside the catalogue (not scored)."]
    if report.get("status") == "incomplete":
        lines += ["", f"**INCOMPLETE**: {ros['frames_played']} of {ros['frames_in_bag']} frames of the bag were "
                      f"played; the ground truth of the {ros['unplayed_frames']} frames never played is scored as "
                      "failures."]
    return "\n".join(lines) + "\n"
