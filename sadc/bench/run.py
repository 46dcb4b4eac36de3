"""`sadc bench`: size, accuracy and latency of one or more artefacts, side by side.

:func:`run_bench` loads each artefact through :func:`sadc.runtime.load.load_predictor`
and measures, in this order: params and GFLOPs (:mod:`sadc.bench.flops`, once per
spec), COCO mAP on a labeled set (:mod:`sadc.data.evaluate`), and latency per batch
size, model-only and end to end (:mod:`sadc.bench.latency`). The whole run uses one
thread count for torch and ONNX Runtime alike. :func:`check_gates` turns the numbers
into a CI verdict; :mod:`sadc.bench.report` prints and writes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from sadc.artefacts.postprocess import PostProcess
from sadc.bench.flops import ModelSize, model_size
from sadc.bench.interference import InterferenceMonitor, Probe
from sadc.bench.latency import LatencyStats, bench_latency, check_counts, median_of_rounds
from sadc.data.formats import image_root
from sadc.data.images import find_images
from sadc.devices import parse_device
from sadc.errors import SadcError
from sadc.runtime.accuracy import predictor_accuracy
from sadc.runtime.load import (
    BACKENDS,
    artefact_postprocess,
    backend_for,
    check_artefact,
    load_predictor,
)


@dataclass
class BenchSettings:
    """What to measure and how; every artefact is measured the same way."""

    batches: tuple[int, ...] = (1, 8)
    warmup: int = 10
    iters: int = 50
    threads: int | None = None  # None: torch's current count, also given to ONNX Runtime
    device: str = "auto"  # auto, cpu, cuda, cuda:N or N (sadc.devices.parse_device)
    accuracy: bool = True
    latency: bool = True
    data: Path | None = None  # the labeled set: COCO json, YOLO data.yaml (or folder) or VOC folder
    images: Path | None = None  # a COCO json's image folder (default: the json's path without .json)
    data_format: str = "auto"  # auto, coco, yolo or voc
    save_detections: Path | None = None  # the first artefact's COCO results
    input_size: str | None = None  # torchvision:NAME artefacts: N or H,W
    repeat: int = 1  # latency rounds, artefacts interleaved (A B A B ...); medians of the rounds are reported

    def check(self) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise SadcError(f"--batch {','.join(map(str, self.batches))}: batch sizes must be >= 1")
        check_counts(self.warmup, self.iters)
        parse_device(self.device)
        if self.repeat < 1:
            raise SadcError(f"--repeat {self.repeat}: must be >= 1")
        if self.repeat > 1 and not self.latency:
            raise SadcError("--repeat repeats the timing; drop --no-latency")
        if self.threads is not None and self.threads < 1:
            raise SadcError(f"--threads {self.threads}: must be >= 1")
        if not (self.accuracy or self.latency):
            raise SadcError("--no-accuracy and --no-latency together leave nothing to measure")
        if self.accuracy and self.data is None:
            raise SadcError(
                "--data VAL is needed to score mAP: a COCO json, a YOLO data.yaml or a VOC folder (or pass --no-accuracy)"
            )
        if self.data is not None and not self.data.exists():
            raise SadcError(
                f"--data {self.data}: not found (a COCO json, a YOLO data.yaml or a VOC folder, e.g. data/synth/val.json)"
            )
        if self.save_detections is not None and not self.accuracy:
            raise SadcError("--save-detections needs the accuracy pass; drop --no-accuracy")

    def image_dir(self) -> Path | None:
        if self.images is not None:
            return self.images
        return image_root(self.data, self.data_format) if self.data is not None else None


@dataclass
class BenchResult:
    """Everything measured for one artefact (absent parts are empty)."""

    name: str
    path: str
    backend: str
    file_mb: float
    params: int | None = None
    gflops: float | None = None
    input_size: tuple[int, int] | None = None
    post: PostProcess | None = None  # the thresholds it ran with
    accuracy: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, dict] = field(default_factory=dict)  # class -> {"AP", "AP50", "gt"}
    latency: dict[str, list[LatencyStats]] = field(default_factory=dict)

    @property
    def map(self) -> float | None:
        return self.accuracy.get("mAP")

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "backend": self.backend,
            "file_mb": self.file_mb,
            "params": self.params,
            "gflops": self.gflops,
            "input_size": list(self.input_size) if self.input_size else None,
            "thresholds": self.post.to_json() if self.post else None,
            "accuracy": self.accuracy,
            "per_class": self.per_class,
            "latency": {kind: [s.to_json() for s in stats] for kind, stats in self.latency.items()},
        }


@dataclass
class BenchReport:
    """A bench run: the machine, the settings, one result per artefact (the first is the reference)."""

    machine: dict
    settings: dict
    results: list[BenchResult]
    interference: dict | None = None  # InterferenceMonitor.to_json() of the timing, None without it

    def delta_map(self, result: BenchResult) -> float | None:
        """mAP minus the first artefact's; None when either is unscored or their thresholds differ
        (then the difference would measure the thresholds, not the runtime)."""
        ref = self.results[0] if self.results else None
        if ref is None or ref.map is None or result.map is None or result.post != ref.post:
            return None
        return result.map - ref.map

    @property
    def same_postprocess(self) -> bool:
        """Every artefact ran with the same thresholds."""
        return len({r.post for r in self.results}) <= 1

    def to_json(self) -> dict:
        results = []
        for r in self.results:
            entry = r.to_json()
            entry["delta_map"] = self.delta_map(r)
            results.append(entry)
        return {"machine": self.machine, "settings": self.settings, "interference": self.interference, "results": results}


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,8"`` -> (1, 8); SadcError naming the flag otherwise."""
    try:
        batches = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise SadcError(f"--batch {text}: comma-separated batch sizes, e.g. 1,8") from None
    if not batches or any(b < 1 for b in batches):
        raise SadcError(f"--batch {text}: batch sizes must be integers >= 1, e.g. 1,8")
    return tuple(dict.fromkeys(batches))


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Set torch's intra-op thread count for the block and restore it after (it is process-wide)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_bench(
    models: Sequence[Path], settings: BenchSettings, *, console: Console | None = None, probe: Probe | None = None
) -> BenchReport:
    """Measure every artefact in ``models`` with ``settings``; the first is the ΔmAP reference.

    Size and accuracy are measured once; the timing runs ``settings.repeat`` rounds over
    all artefacts in turn (A B A B, so a slow spell of the machine hits every artefact)
    and reports the median of the rounds. An :class:`InterferenceMonitor` (``probe``: its
    seam to the machine) times a reference matmul before the first and after each
    artefact and says whether the machine was quiet.
    """
    from sadc.engine.machine import machine_summary, resolve_device

    settings.check()
    if not models:
        raise SadcError("give at least one artefact to bench")
    for path in models:  # fail before minutes of work on the first artefact
        check_artefact(path, settings.input_size)
    post = common_postprocess(models)
    threads = settings.threads or torch.get_num_threads()
    image_dir = settings.image_dir()
    files: list[Path] = []
    if settings.latency and image_dir is not None:
        files = find_images(image_dir)[: max(settings.batches)]
    sizes: dict[str, ModelSize] = {}  # spec json -> size: computed once per architecture
    results: list[BenchResult] = []
    timed: list[list[dict[str, list[LatencyStats]]]] = [[] for _ in models]  # per artefact, per round
    monitor = InterferenceMonitor(threads, probe or Probe()) if settings.latency else None
    with torch_threads(threads):
        if monitor is not None:
            monitor.start()
        for round_ in range(settings.repeat):
            for i, path in enumerate(models):
                predictor = load_predictor(
                    path, device=settings.device, threads=threads, post=post, input_size=settings.input_size
                )
                if round_ == 0:
                    results.append(_describe(predictor, path, i, settings, sizes, console, artefact_postprocess(path) or post))
                if settings.latency:
                    status = console.status("latency") if console is not None else contextlib.nullcontext()
                    with status as spinner:
                        timed[i].append(
                            bench_latency(
                                predictor,
                                batches=settings.batches,
                                warmup=settings.warmup,
                                iters=settings.iters,
                                files=files,
                                progress=spinner.update if spinner is not None else None,
                            )
                        )
                    assert monitor is not None
                    monitor.check(predictor.name + (f" (round {round_ + 1})" if settings.repeat > 1 else ""))
                del predictor  # one artefact in memory at a time
        if monitor is not None:
            monitor.finish()
        for result, rounds in zip(results, timed):
            if rounds:
                result.latency = {
                    kind: [median_of_rounds(cells) for cells in zip(*(r[kind] for r in rounds))] for kind in rounds[0]
                }
        machine = machine_summary()
    input_sizes = {r.input_size for r in results}
    return BenchReport(
        machine=machine,
        settings={
            "device": resolve_device(settings.device),
            "threads": threads,
            "batches": list(settings.batches),
            "warmup": settings.warmup,
            "iters": settings.iters,
            "repeat": settings.repeat,
            "data": str(settings.data) if settings.data else None,
            "images": str(image_dir) if image_dir else None,
            "end_to_end_files": [str(f) for f in files],
            "model_inputs": "the end-to-end files, letterboxed" if files else "seeded random pixels (no image files)",
            "same_input_shape": len(input_sizes) == 1,
            "same_thresholds": len({r.post for r in results}) == 1,
            "model_only": {b.name: b.model_only for b in _backends_of(results)},
            "gflops": "2 x multiply-adds / 1e9 per image at input size (convs and matmuls of backbone, FPN, heads)",
        },
        results=results,
        interference=monitor.to_json() if monitor is not None else None,
    )


def common_postprocess(models: Sequence[Path | str]) -> PostProcess:
    """The thresholds torch models run with in a bench: those fixed in the exports (the first
    export's when they differ; rows with others then get no ΔmAP), else sadc's defaults."""
    fixed = [p for p in (artefact_postprocess(m) for m in models) if p is not None]
    return fixed[0] if fixed else PostProcess()


def _describe(
    predictor, source: Path | str, i: int, settings: BenchSettings, sizes: dict, console: Console | None, post: PostProcess
) -> BenchResult:
    """Size and (with ``settings.accuracy``) mAP of the ``i``-th artefact: measured once, not per round."""
    path = Path(source)
    key = predictor.spec.model_dump_json()
    if key not in sizes:
        sizes[key] = model_size(predictor.spec)
    size = sizes[key]
    result = BenchResult(
        name=predictor.name,
        path=str(path),
        backend=backend_for(path).name,
        file_mb=path.stat().st_size / 1e6 if path.is_file() else 0.0,
        params=size.params,
        gflops=size.gflops,
        input_size=size.input_size,
        post=post,
    )
    if settings.accuracy:
        assert settings.data is not None  # settings.check() saw to it
        accuracy = predictor_accuracy(
            predictor,
            settings.data,
            settings.images,
            fmt=settings.data_format,
            batch_size=max(settings.batches),
            save_detections=settings.save_detections if i == 0 else None,
            console=console,
        )
        result.per_class = accuracy.pop("per_class", {})
        result.accuracy = accuracy
    return result


def _backends_of(results: list[BenchResult]):
    used = {r.backend for r in results}
    return [b for b in BACKENDS if b.name in used]


def check_gates(report: BenchReport, *, fail_under_map: float | None = None, max_map_drop: float | None = None) -> None:
    """Raise one-line :class:`SadcError` naming every artefact that fails a CI gate.

    ``fail_under_map``: each artefact's mAP must be >= X. ``max_map_drop``: each
    artefact's mAP may be at most X below the first artefact's. mAP is in [0, 1].
    """
    check_gate_values(fail_under_map, max_map_drop)
    failures = []
    if not report.results:
        return
    ref = report.results[0]
    if max_map_drop is not None and not report.same_postprocess:
        from sadc.bench.report import thresholds_text

        other = [r.name for r in report.results if r.post != ref.post]
        raise SadcError(
            f"--max-map-drop: {', '.join(other)} ran with other thresholds than {ref.name} ({thresholds_text(ref.post)}), "
            "so a mAP difference would measure the thresholds; export them with the same --conf/--iou/--max-det/--topk"
        )
    for r in report.results:
        if r.map is None:
            continue
        if fail_under_map is not None and r.map < fail_under_map:
            failures.append(f"{r.name} mAP {r.map:.4f} < --fail-under-map {fail_under_map:.4f}")
        drop = report.delta_map(r)
        if max_map_drop is not None and drop is not None and -drop > max_map_drop:
            failures.append(
                f"{r.name} mAP {r.map:.4f} is {-drop:.4f} below {ref.name}'s {ref.map:.4f} (--max-map-drop {max_map_drop:.4f})"
            )
    if failures:
        raise SadcError("gate failed: " + "; ".join(failures))


def check_gate_values(fail_under_map: float | None, max_map_drop: float | None, *, accuracy: bool = True) -> None:
    """Refuse gate values outside [0, 1] (mAP is a fraction, not a percentage) or gates without mAP."""
    for flag, value in (("--fail-under-map", fail_under_map), ("--max-map-drop", max_map_drop)):
        if value is None:
            continue
        if not accuracy:
            raise SadcError(f"{flag} needs the accuracy pass; drop --no-accuracy")
        if not 0.0 <= value <= 1.0:
            hint = f"; did you mean {value / 100:g}?" if 1.0 < value <= 100.0 else ""
            raise SadcError(f"{flag} {value:g}: mAP is a fraction in [0, 1]{hint}")
