"""Bench reports: terminal tables, bench.json, bench.md and bench.png (latency vs mAP).

The first artefact is the reference for ΔmAP. Latencies are ms per batch (p50, p90,
p99); throughput is images/s. "model" and "e2e" are the two timings of
:mod:`sadc.bench.latency`, never mixed.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from sadc.bench.classes import class_markdown, class_rows, lost_lines, write_class_plot
from sadc.bench.interference import summary_line
from sadc.bench.latency import LatencyStats
from sadc.bench.run import BenchReport, BenchResult
from sadc.engine.machine import NO_INT8_DOT


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _delta(report: BenchReport, r: BenchResult) -> str:
    delta = report.delta_map(r)
    if r is report.results[0] and delta is not None:
        return "ref"
    if delta is None and r.map is not None and report.results[0].map is not None:
        return "n/a (other thresholds)"
    return _num(delta, "+.4f")


def thresholds_text(post) -> str:
    """``conf 0.25, iou 0.5, max-det 20, topk 1000``: a row's post-processing in the flags' names."""
    if post is None:
        return "-"
    return (
        f"conf {post.score_threshold:g}, iou {post.iou_threshold:g}, max-det {post.max_detections}, topk {post.topk_candidates}"
    )


def thresholds_line(report: BenchReport) -> str:
    """One sentence on the post-processing of the whole table."""
    if report.same_postprocess and report.results:
        return f"Every artefact ran with the same post-processing: {thresholds_text(report.results[0].post)}."
    return (
        "The artefacts ran with different post-processing (column 'thresholds'; an export's are fixed in its graph): "
        "ΔmAP is given only between rows with the reference's thresholds."
    )


def model_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the per-artefact table: size and accuracy."""
    header = ["model", "backend", "params (M)", "GFLOPs", "file (MB)", "mAP", "AP50", "ΔmAP"]
    per_row = not report.same_postprocess
    if per_row:
        header.append("thresholds")
    rows = []
    for r in report.results:
        a = r.accuracy
        rows.append(
            [
                r.name,
                r.backend,
                _num(r.params / 1e6 if r.params is not None else None, ".2f"),
                _num(r.gflops, ".2f"),
                f"{r.file_mb:.1f}",
                _num(a.get("mAP"), ".4f"),
                _num(a.get("AP50"), ".4f"),
                _delta(report, r),
                *([thresholds_text(r.post)] if per_row else []),
            ]
        )
    return header, rows


def latency_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the latency table: one row per artefact and batch size.

    ``x ref``: the model p50 over the first artefact's at the same batch size (with ``--repeat``, of the
    medians of the interleaved rounds), the ratio to quote between artefacts.
    """
    header = ["model", "batch", "p50 ms", "x ref", "p90 ms", "p99 ms", "img/s", "e2e p50 ms", "e2e p99 ms", "e2e img/s"]
    reference = report.results[0] if report.results else None
    ref_p50 = {s.batch: s.p50_ms for s in reference.latency.get("model", [])} if reference else {}
    rows = []
    for r in report.results:
        e2e_by_batch = {s.batch: s for s in r.latency.get("end_to_end", [])}
        for s in r.latency.get("model", []):
            e = e2e_by_batch.get(s.batch)
            rows.append(
                [
                    r.name,
                    str(s.batch),
                    f"{s.p50_ms:.2f}",
                    "ref" if r is reference else _num(s.p50_ms / ref_p50[s.batch] if ref_p50.get(s.batch) else None, ".2f"),
                    f"{s.p90_ms:.2f}",
                    f"{s.p99_ms:.2f}",
                    f"{s.throughput:.1f}",
                    _num(e.p50_ms if e else None, ".2f"),
                    _num(e.p99_ms if e else None, ".2f"),
                    _num(e.throughput if e else None, ".1f"),
                ]
            )
    return header, rows


def machine_line(report: BenchReport) -> str:
    m, s = report.machine, report.settings
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    kernels = f", torch kernels {m['cpu_capability']}" if m.get("cpu_capability") else ""
    dots = m.get("int8_dot")  # absent in reports written before 2026-12-05; None: flags unreadable
    int8 = "" if dots is None else (f", INT8 dot products {', '.join(dots)}" if dots else f", {NO_INT8_DOT}")
    return (
        f"{m.get('cpu')} ({m.get('cores')} cores{gpu}{kernels}{int8}), device {s['device']}, {s['threads']} threads; {versions}"
    )


def _add_column(table: Table, title: str, *, name: bool) -> None:
    """A right-aligned number column, or the left-aligned artefact name, which folds rather than end in "…" on 80 columns."""
    if name:
        table.add_column(title, justify="left", min_width=16, overflow="fold")
    else:
        table.add_column(title, justify="right")


def tables(report: BenchReport) -> list[Table]:
    """Rich tables for the terminal: artefacts, then latency (if measured)."""
    out = []
    header, rows = model_rows(report)
    table = Table(title="sadc bench", caption=machine_line(report) + "\n" + thresholds_line(report))
    for col in header[:1] + header[2:]:  # the name already says the backend
        _add_column(table, col, name=col == "model")
    for row in rows:
        table.add_row(*row[:1], *row[2:])
    out.append(table)
    header, rows = latency_rows(report)
    if rows:
        s = report.settings
        table = Table(
            title="latency (ms per batch; model = model-only call, e2e = files to original-pixel boxes)",
            caption=f"warm-up {s['warmup']}, {s['iters']} timed calls per cell{_rounds(s)}"
            + (f"\n{summary_line(report.interference)}" if report.interference else ""),
        )
        keep = [i for i, col in enumerate(header) if col != "p90 ms"]  # as narrow as before "x ref"; bench.md has p90
        for i in keep:
            _add_column(table, header[i], name=i == 0)
        for row in rows:
            table.add_row(*(row[i] for i in keep))
        out.append(table)
    header, rows = class_rows(report)
    if len(header) > 2 and rows:
        lost = "; ".join(line[2:] for line in lost_lines(report))
        table = Table(title="AP per class", caption=f"AP fell most against {report.results[0].name}: {lost}" if lost else None)
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        out.append(table)
    return out


def _rounds(settings: dict) -> str:
    n = settings.get("repeat", 1)
    return f", {n} interleaved rounds (median of the rounds' numbers)" if n > 1 else ""


def _markdown_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    align = ["---"] * left + ["---:"] * (len(header) - left)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: BenchReport, plot: str | None = None, class_plot: str | None = None) -> str:
    s = report.settings
    parts = [
        "# sadc bench",
        "",
        f"Machine: {machine_line(report)}.",
        "",
        f"Settings: batch sizes {', '.join(map(str, s['batches']))}; warm-up {s['warmup']} calls, then {s['iters']} timed "
        f"calls per cell; torch and ONNX Runtime both use {s['threads']} intra-op threads. Labeled set: {s['data'] or '-'}.",
        "",
        "## Artefacts",
        "",
        _markdown_table(*model_rows(report), left=2),
        "",
        "GFLOPs: " + s["gflops"] + ". ΔmAP: mAP@[.5:.95] minus the first artefact's. " + thresholds_line(report),
    ]
    header, rows = latency_rows(report)
    if rows:
        parts += ["", "## Latency", ""]
        if report.interference:
            line = summary_line(report.interference)
            parts += [f"**{line}**" if not report.interference["reliable"] else str(line), ""]
        if s.get("repeat", 1) > 1:
            parts += [f"Timing in {s['repeat']} interleaved rounds; each number is the median of the rounds'.", ""]
        inputs = s.get("model_inputs", "seeded random pixels")  # reports before 2026-12-05: noise
        parts += [_markdown_table(header, rows), "", f'What "model" times, per backend (inputs: {inputs}):', ""]
        parts += [f"- {name}: {what}" for name, what in s["model_only"].items()]
        parts += [
            "- e2e (end to end): read + decode the image files, letterbox, the predictor's predict, boxes back "
            "to original image pixels.",
        ]
        if not s.get("same_input_shape", True):
            parts += ["", "Note: the artefacts have different input sizes, so their latencies are not at equal shapes."]
    if plot:
        parts += ["", f"![latency vs mAP]({plot})"]
    parts += class_markdown(report, class_plot)
    return "\n".join(parts) + "\n"


def plot_point(r: BenchResult) -> tuple[float, float, int] | None:
    """(latency ms, mAP, batch) for the plot: model-only p50 at the smallest batch; None if unmeasured."""
    if r.map is None or not r.latency.get("model"):
        return None
    stats: LatencyStats = min(r.latency["model"], key=lambda s: s.batch)
    return stats.p50_ms, r.map, stats.batch


LABEL_OFFSETS = [(6, 8), (6, -14), (-6, 8), (-6, -14), (6, 20), (6, -26), (-6, 20), (-6, -26), (6, 32), (6, -38)]
"""Where a point's label may go (points from the marker; negative x: the label ends left of it), in order of preference."""


def _place_labels(fig, ax, labels: list[tuple[str, float, float, str]]) -> None:
    """Annotate each (text, x, y, colour) in its point's colour at the first of :data:`LABEL_OFFSETS` whose box overlaps no earlier label, no
    marker and stays inside the axes (else the offset that overlaps least): artefacts of equal mAP (fp32 torch,
    its ONNX and INT8 exports) sit close together and would otherwise print over each other."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    radius = 6.0 * fig.dpi / 72  # the markers' (s=60) radius, in pixels
    markers = [
        Bbox.from_extents(mx - radius, my - radius, mx + radius, my + radius)
        for mx, my in (ax.transData.transform((x, y)) for _, x, y, _ in labels)
    ]
    placed: list = []

    def common(a, b) -> float:
        both = Bbox.intersection(a, b)
        return 0.0 if both is None else both.width * both.height

    def overlap(box) -> float:
        outside = box.width * box.height - common(box, inside)
        return sum(common(box, other) for other in placed + markers) + outside

    for text, x, y, colour in labels:
        best = None
        for dx, dy in LABEL_OFFSETS:
            far = abs(dy) > 14  # a label two lines away gets a leader line to its point
            note = ax.annotate(
                text,
                (x, y),
                textcoords="offset points",
                xytext=(dx, dy),
                fontsize=8,
                color=colour,
                ha="left" if dx >= 0 else "right",
                arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.6, "shrinkA": 1, "shrinkB": 5} if far else None,
            )
            note.update_positions(renderer)
            box = Text.get_window_extent(note, renderer)  # the text alone: Annotation's own extent includes the leader
            cost = overlap(box)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, note, box)
            else:
                note.remove()
            if cost == 0:
                break
        assert best is not None
        placed.append(best[2])


def write_plot(report: BenchReport, path: Path) -> Path | None:
    """Scatter of model-only p50 latency vs mAP, one labelled point per artefact; None if nothing to plot."""
    points = [(r, p) for r in report.results if (p := plot_point(r)) is not None]
    if not points:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    batch = points[0][1][2]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for i, (_, (ms, m, _)) in enumerate(points):
        ax.scatter([ms], [m], s=60, color=f"C{i % 10}", zorder=3)
    xs = [p[0] for _, p in points]
    ys = [p[1] for _, p in points]
    ax.set_xlim(0, max(xs) * 1.35)
    spread = max(ys) - min(ys)
    pad = max(spread * 0.3, 0.02)
    ax.set_ylim(max(0.0, min(ys) - pad), min(1.0, max(ys) + pad))
    ax.set_xlabel(f"model-only latency, p50 at batch {batch} (ms)")
    ax.set_ylabel("mAP@[.5:.95]")
    machine, s = report.machine, report.settings
    ax.set_title(f"latency vs accuracy — {s['device']}, {s['threads']} threads\n{machine.get('cpu')}", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()  # before the labels: they are placed in the final axes and kept inside them
    _place_labels(fig, ax, [(r.name, p[0], p[1], f"C{i % 10}") for i, (r, p) in enumerate(points)])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_reports(report: BenchReport, out: Path) -> list[Path]:
    """Write bench.json, bench.png (when latency and mAP were both measured), bench_classes.png (AP per
    class, when mAP was measured) and bench.md into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    json_path = out / "bench.json"
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    written.append(json_path)
    plot = write_plot(report, out / "bench.png")
    if plot is not None:
        written.append(plot)
    class_plot = write_class_plot(report, out / "bench_classes.png")
    if class_plot is not None:
        written.append(class_plot)
    md_path = out / "bench.md"
    md_path.write_text(markdown(report, plot.name if plot else None, class_plot.name if class_plot else None))
    written.append(md_path)
    return written
