"""Per-class accuracy in bench reports: which classes an artefact lost against the first.

Each :class:`~sadc.bench.run.BenchResult` carries ``per_class``: ``{class name: {"AP",
"AP50", "gt"}}`` from COCOeval's precision array (see
:func:`sadc.data.evaluate.per_class_metrics`); AP is None for a class without ground
truth. The first artefact is the reference, as for ΔmAP.
"""

from __future__ import annotations

from pathlib import Path

from sadc.bench.run import BenchReport, BenchResult

LOST_SHOWN = 3  # classes named per artefact in bench.md


def _ap(r: BenchResult, name: str, key: str = "AP") -> float | None:
    return (r.per_class.get(name) or {}).get(key)


def class_names(report: BenchReport) -> list[str]:
    """Class names in the reference's order (then any others), for tables and the chart."""
    names: list[str] = []
    for r in report.results:
        names += [n for n in r.per_class if n not in names]
    return names


def class_drops(report: BenchReport, r: BenchResult) -> list[tuple[str, float]]:
    """(class, AP change vs the first artefact) for classes both scored, largest loss first."""
    ref = report.results[0]
    drops = []
    for name in class_names(report):
        a, b = _ap(ref, name), _ap(r, name)
        if a is not None and b is not None:
            drops.append((name, b - a))
    return sorted(drops, key=lambda d: d[1])


def class_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per class with its GT boxes and each artefact's AP / AP50."""
    scored = [r for r in report.results if r.per_class]
    header = ["class", "GT boxes"] + [f"{r.name} AP / AP50" for r in scored]
    rows = []
    for name in class_names(report):
        gt = next((r.per_class[name]["gt"] for r in scored if name in r.per_class), None)
        cells = []
        for r in scored:
            ap, ap50 = _ap(r, name), _ap(r, name, "AP50")
            cells.append("-" if ap is None else f"{ap:.4f} / {ap50:.4f}")
        rows.append([name, "-" if gt is None else str(gt), *cells])
    return header, rows


def lost_lines(report: BenchReport) -> list[str]:
    """One markdown bullet per non-reference artefact naming the classes whose AP fell most."""
    lines: list[str] = []
    if not report.results:
        return lines
    ref = report.results[0]
    for r in report.results[1:]:
        if not r.per_class or not ref.per_class:
            continue
        lost = [(n, d) for n, d in class_drops(report, r)[:LOST_SHOWN] if d < 0]
        shown = ", ".join(f"{n} {d:+.4f}" for n, d in lost) if lost else "none (no class lost AP)"
        lines.append(f"- {r.name}: {shown}")
    return lines


def class_markdown(report: BenchReport, plot: str | None = None) -> list[str]:
    """The bench.md section: classes that lost most, the per-class table, the chart."""
    header, rows = class_rows(report)
    if len(header) <= 2 or not rows:
        return []
    parts = ["", "## Per class", ""]
    lost = lost_lines(report)
    if lost:
        parts += [f"Classes whose AP fell most against {report.results[0].name}:", "", *lost, ""]
    align = ["---"] + ["---:"] * (len(header) - 1)
    parts += ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    parts += ["| " + " | ".join(row) + " |" for row in rows]
    parts += ["", "AP: mAP@[.5:.95] of the class (area all, 100 detections); GT boxes: non-crowd boxes of the class."]
    if plot:
        parts += ["", f"![AP per class]({plot})"]
    return parts


def write_class_plot(report: BenchReport, path: Path) -> Path | None:
    """Grouped bars of AP per class, one colour per artefact; None when nothing was scored."""
    scored = [r for r in report.results if r.per_class]
    names = class_names(report)
    if not scored or not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / len(scored)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(names) * len(scored) + 2), 4.5), dpi=120)
    for i, r in enumerate(scored):
        xs = [k + (i - (len(scored) - 1) / 2) * width for k in range(len(names))]
        ax.bar(xs, [_ap(r, n) or 0.0 for n in names], width=width, label=r.name, color=f"C{i % 10}")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center", fontsize=8)
    ax.set_ylabel("AP@[.5:.95]")
    ax.set_ylim(0, 1)
    ax.set_title("AP per class", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
