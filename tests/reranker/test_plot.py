"""`python -m reranker plot`: curves from train_log.jsonl, damaged lines skipped, clear errors."""

from __future__ import annotations

import json

import pytest

from reranker.__main__ import main
from reranker.plot import plot_run, read_log, series


def write_log(path, records, damaged: bool = True):
    lines = [json.dumps(r) for r in records]
    if damaged:
        lines.insert(1, '{"event": "train", "step": 3, "loss"')  # a run killed mid-write
    path.write_text("\n".join(lines) + "\n")


def test_series_groups_by_stage_and_event_and_keeps_numbers_only(tmp_path):
    write_log(tmp_path / "train_log.jsonl", [
        {"event": "start", "step": 0, "bf16": True},
        {"event": "train", "step": 10, "loss": 0.69, "lr": 1e-4},
        {"event": "train", "step": 20, "loss": 0.5, "lr": 1e-4},
        {"event": "eval", "step": 20, "auc": 0.7, "note": "x", "nan": float("nan")},
        {"event": "eval", "stage": "fluency", "step": 1, "val_loss": 0.6},
    ])
    records = read_log(tmp_path / "train_log.jsonl")
    assert len(records) == 5  # the damaged line is skipped
    panels = series(records)
    assert panels == {"train": {"loss": ([10.0, 20.0], [0.69, 0.5])}, "eval": {"auc": ([20.0], [0.7])},
                      "fluency eval": {"val_loss": ([1.0], [0.6])}}


def test_plot_writes_a_png_and_the_cli_reports_errors(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    write_log(tmp_path / "train_log.jsonl", [{"event": "train", "step": s, "loss": 1 / s} for s in range(1, 6)])
    out = plot_run(tmp_path)
    assert out == tmp_path / "train_curves.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "no train_log.jsonl" in capsys.readouterr().err
    write_log(tmp_path / "train_log.jsonl", [{"event": "start", "step": 0}], damaged=False)
    with pytest.raises(ValueError, match="no train or eval records"):
        plot_run(tmp_path)
