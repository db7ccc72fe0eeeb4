"""Progress bars: live frames on a terminal, a few whole lines anywhere else (pipes, CI, log files)."""

from __future__ import annotations

import io
import sys
import time

import pytest

from corpus import progress as progress_module
from corpus.progress import progress, quiet_library_bars


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_piped_fast_loop_writes_a_few_whole_lines_with_the_final_count():
    out = io.StringIO()
    total = sum(1 for _ in progress(range(100_000), desc="items", file=out))
    text = out.getvalue()
    assert total == 100_000
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3, lines
    assert text.endswith("\n")
    assert "100000/100000" in lines[-1] and lines[-1].startswith("items: 100%")
    assert all(line.strip() and len(line) <= 80 for line in lines)
    assert text.isascii()


def test_piped_unknown_total_and_manual_updates_end_with_the_count():
    out = io.StringIO()
    with progress(desc="train", unit="step", file=out) as bar:
        for _ in range(50_000):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) <= 3 and "50000step" in lines[-1]
    assert "\r" not in out.getvalue()


def test_piped_long_work_writes_one_line_every_interval(monkeypatch):
    monkeypatch.setattr(progress_module, "QUIET_INTERVAL_S", 0.05)
    out = io.StringIO()
    for _ in progress(range(20), desc="slow", file=out):
        time.sleep(0.02)  # 0.4 s in all: several intervals, far fewer lines than items
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert 3 <= len(lines) < 20, lines
    assert "20/20" in lines[-1]
    assert len(set(lines)) == len(lines)  # no line repeated


def test_piped_bar_that_does_not_stay_leaves_no_blank_lines():
    out = io.StringIO()
    for _ in progress(range(1000), desc="mix cases", leave=False, file=out):
        pass
    assert "\r" not in out.getvalue()
    assert all(line.strip() for line in out.getvalue().splitlines())


def test_piped_caller_may_ask_for_a_longer_interval():
    out = io.StringIO()
    bar = progress(range(3), file=out, mininterval=30.0)
    assert bar.mininterval == 30.0 and bar.maxinterval >= 30.0
    bar.close()
    short = progress(range(3), file=io.StringIO(), mininterval=0.01)
    assert short.mininterval == progress_module.QUIET_INTERVAL_S
    short.close()


def test_terminal_gets_the_usual_live_bar():
    out = FakeTerminal()
    for _ in progress(range(100_000), desc="items", file=out, mininterval=0):
        pass
    text = out.getvalue()
    assert "\r" in text
    assert text.count("\r") > 3  # redrawn in place, frame after frame
    assert "100000/100000" in text


def test_default_stream_is_stderr(monkeypatch):
    fake = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    for _ in progress(range(10), desc="default"):
        pass
    assert "default: 100%" in fake.getvalue() and "\r" not in fake.getvalue()


@pytest.mark.parametrize("stream", [io.StringIO, FakeTerminal])
def test_disable_writes_nothing(stream):
    out = stream()
    assert list(progress(range(1000), desc="x", file=out, disable=True)) == list(range(1000))
    with progress(total=10, file=out, disable=True) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_disable_none_keeps_tqdms_meaning_off_a_terminal():
    out = io.StringIO()
    list(progress(range(10), file=out, disable=None))  # tqdm: None = off where the stream is no terminal
    assert out.getvalue() == ""


def test_quiet_library_bars_only_off_a_terminal(monkeypatch):
    hf_logging = pytest.importorskip("transformers.utils.logging")
    was_enabled = hf_logging.is_progress_bar_enabled()
    try:
        hf_logging.enable_progress_bar()
        monkeypatch.setattr(sys, "stderr", FakeTerminal())
        quiet_library_bars()
        assert hf_logging.is_progress_bar_enabled()
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        quiet_library_bars()
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()
