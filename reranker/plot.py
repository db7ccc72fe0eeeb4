"""`python -m reranker plot RUN`: a training run's curves (loss, validation measures) from its train_log.jsonl.

Every training path writes the same record shape, one JSON object a line: `event` ("train" or "eval"),
`step`, an optional `stage` (the editor's "fluency" head and "first_stage"), and numbers. Each (stage, event)
gets one panel with every numeric field against the step, so a new measure appears without code here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

LOG_FILE = "train_log.jsonl"
NOT_PLOTTED = {"step", "elapsed", "world", "lr", "samples_per_s"}


def read_log(path: str | Path) -> list[dict]:
    """The records of a train_log.jsonl; damaged lines are skipped (a run killed mid-write leaves one)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int | float):
            records.append(record)
    return records


def series(records: list[dict]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """{panel: {measure: (steps, values)}}, a panel per (stage, event), finite numbers only."""
    out: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for record in records:
        if record.get("event") not in ("train", "eval"):
            continue
        panel = " ".join(p for p in (record.get("stage"), record["event"]) if p)
        for key, value in record.items():
            if key in NOT_PLOTTED or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                steps, values = out.setdefault(panel, {}).setdefault(key, ([], []))
                steps.append(float(record["step"]))
                values.append(float(value))
    return out


def plot_run(run: str | Path, out: str | Path | None = None) -> Path:
    """Draw RUN/train_log.jsonl (or RUN itself, a log file) into a PNG; returns its path."""
    run = Path(run)
    log = run if run.is_file() else run / LOG_FILE
    if not log.is_file():
        raise FileNotFoundError(f"no {LOG_FILE} in {run}: models trained by this version of riposte keep one")
    panels = series(read_log(log))
    if not panels:
        raise ValueError(f"{log} holds no train or eval records with numbers to plot")
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from exc
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), squeeze=False)
    for ax, (name, measures) in zip(axes[:, 0], panels.items(), strict=True):
        for measure, (steps, values) in measures.items():
            ax.plot(steps, values, marker="o" if len(steps) < 40 else None, label=measure)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out) if out else (run if run.is_dir() else run.parent) / "train_curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
