"""sadc bench on a busy machine: the interference verdict and interleaved rounds (no timing asserted:
the machine is faked through :class:`sadc.bench.interference.Probe`)."""

from __future__ import annotations

import itertools
import statistics

import pytest

from sadc.bench.interference import InterferenceMonitor, Probe, summary_line
from sadc.bench.latency import LatencyStats, median_of_rounds
from sadc.bench.report import markdown
from sadc.bench.run import BenchSettings, run_bench
from sadc.errors import SadcError
from tests.helpers import save_tiny_checkpoint


def _probe(loads, refs_ms, cores=2):
    loads, refs = iter(loads), iter(refs_ms)
    return Probe(loadavg=lambda: next(loads), cores=lambda: cores, reference_s=lambda: next(refs) / 1e3)


def _monitor(loads, refs_ms, threads=2, cores=2):
    m = InterferenceMonitor(threads, _probe(loads, refs_ms, cores))
    m.start()
    for name in ("a", "b", "c")[: len(refs_ms) - 1]:
        m.check(name)
    m.finish()
    return m


def test_a_quiet_machine_is_reliable():
    # Reference within 1/1.5..1.5 of the first; others' busy cores + our 2 threads <= 2 cores + 0.5, before and after.
    m = _monitor([0.3, 0.4], [4.0, 4.9, 3.3, 4.1])
    report = m.to_json()
    assert report["reliable"] and report["reasons"] == []
    assert [r["ratio"] for r in report["reference_ms"]] == pytest.approx([1.0, 4.9 / 4, 3.3 / 4, 4.1 / 4])
    assert summary_line(report).startswith("machine quiet")


@pytest.mark.parametrize(
    ("loads", "refs", "reason"),
    [
        ([0.0, 0.0], [4.0, 4.0, 6.4, 4.0], "reference matmul 1.60x its first time after b"),
        ([0.0, 0.0], [4.0, 2.5, 4.0, 4.0], "reference matmul 0.62x its first time after a"),
        ([0.6, 0.0], [4.0, 4.0, 4.0, 4.0], "load 0.60 before the run + 2 bench threads > 2 cores"),
        ([0.0, 0.7], [4.0, 4.0, 4.0, 4.0], "load 0.70 after the run + 2 bench threads > 2 cores"),
    ],
)
def test_each_rule_makes_the_run_unreliable(loads, refs, reason):
    report = _monitor(loads, refs).to_json()
    assert not report["reliable"] and report["reasons"] == [reason]
    assert summary_line(report).startswith("UNRELIABLE") and reason in summary_line(report)


def test_no_load_average_leaves_the_matmul_rule():
    report = _monitor([None, None], [4.0, 4.2]).to_json()
    assert report["reliable"] and report["load_before"] is None and "reference matmul" in summary_line(report)


def _stats(p50, batch=1):
    return LatencyStats(
        batch=batch, warmup=0, iters=10, p50_ms=p50, p90_ms=2 * p50, p99_ms=3 * p50, mean_ms=p50, throughput=1e3 / p50
    )


def test_median_of_rounds_is_the_median_of_each_number():
    rounds = [_stats(10.0), _stats(30.0), _stats(12.0)]
    m = median_of_rounds(rounds)
    assert m.p50_ms == statistics.median([10.0, 30.0, 12.0]) == 12.0
    assert m.p99_ms == 36.0 and m.throughput == statistics.median([100.0, 1e3 / 30, 1e3 / 12])
    assert m.rounds == 3 and m.iters == 30 and m.p50_rounds_ms == [10.0, 30.0, 12.0]
    assert median_of_rounds([rounds[0]]) is rounds[0]


def test_repeat_interleaves_artefacts_and_reports_the_median_of_medians(tmp_path, monkeypatch):
    a = save_tiny_checkpoint(tmp_path / "a" / "best.pt")
    b = save_tiny_checkpoint(tmp_path / "b" / "best.pt", seed=1)
    order = []
    p50s = {str(a): iter([10.0, 50.0, 11.0]), str(b): iter([20.0, 21.0, 90.0])}  # one slow round each

    def fake_latency(predictor, *, batches, **_):
        path = str(predictor.path)
        order.append(path)
        p50 = next(p50s[path])
        return {"model": [_stats(p50, batch) for batch in batches], "end_to_end": []}

    monkeypatch.setattr("sadc.bench.run.bench_latency", fake_latency)
    refs = itertools.chain([4.0], [4.0] * 5, [8.0])  # the machine halves its speed after the last artefact
    probe = Probe(loadavg=lambda: 0.1, cores=lambda: 4, reference_s=lambda: next(refs) / 1e3)
    settings = BenchSettings(batches=(1, 2), accuracy=False, repeat=3, warmup=0, iters=1)
    report = run_bench([a, b], settings, probe=probe)

    assert order == [str(a), str(b)] * 3
    p50 = {r.path: [s.p50_ms for s in r.latency["model"]] for r in report.results}
    assert p50 == {str(a): [11.0, 11.0], str(b): [21.0, 21.0]}
    out = report.to_json()
    assert out["settings"]["repeat"] == 3 and out["results"][0]["latency"]["model"][0]["p50_rounds_ms"] == [10.0, 50.0, 11.0]
    inter = out["interference"]
    assert [r["after"] for r in inter["reference_ms"]][:3] == [
        "start",
        "a/best.pt (torch) (round 1)",
        "b/best.pt (torch) (round 1)",
    ]
    assert not inter["reliable"] and inter["reasons"] == [
        "reference matmul 2.00x its first time after b/best.pt (torch) (round 3)"
    ]
    md = markdown(report)
    assert "**UNRELIABLE: the machine was busy" in md and "3 interleaved rounds" in md


def test_repeat_is_validated():
    with pytest.raises(SadcError, match=r"--repeat 0: must be >= 1"):
        BenchSettings(repeat=0, accuracy=False).check()
    with pytest.raises(SadcError, match=r"--repeat repeats the timing; drop --no-latency"):
        BenchSettings(repeat=2, latency=False, data=None, accuracy=True).check()


def test_others_busy_cores_reads_proc_stat(monkeypatch):
    """Busy cores = busy jiffies / all jiffies over the sample, times the cores (here 25% of 4 = 1.0)."""
    from sadc.bench import interference

    samples = iter([(100, 1000), (200, 1400)])
    monkeypatch.setattr(interference, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(interference.time, "sleep", lambda s: None)
    assert interference.others_busy_cores(cores=4) == pytest.approx(1.0)
