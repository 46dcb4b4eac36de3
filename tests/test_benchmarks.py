"""The benchmark scripts' pipelines work (tiny versions; they assert nothing about speed or mAP)."""

import sys

import pytest


def test_ablation_quick_runs_every_row(monkeypatch, capsys):
    from benchmarks import ablation

    monkeypatch.setattr(sys, "argv", ["ablation.py", "--quick"])
    ablation.main()
    out = capsys.readouterr().out
    for row in ablation.ROWS:
        assert f"| ({row.key}) |" in out


@pytest.mark.parametrize("values, expected", [([0.2, 0.4], (0.3, 0.1)), ([0.5], (0.5, 0.0))])
def test_ablation_spread(values, expected):
    from benchmarks.ablation import spread

    assert spread(values) == pytest.approx(expected)
