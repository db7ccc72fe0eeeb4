"""Progress bars that suit where they are written: live on a terminal, whole lines in a pipe, CI or a log.

tqdm redraws its bar with carriage returns ten times a second. On a terminal that is one moving line; piped into a
file it is one endless line of frames (a first `make chat` under CI wrote a 100 kB line). Off a terminal `progress`
keeps the same tqdm but draws a plain ASCII line every few seconds, each ended by a newline, plus the final line.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

QUIET_INTERVAL_S = 5.0  # off a terminal, at most one line this often (and the final one)
_MOVE_UP = "\x1b[A"  # tqdm's cursor-up for a nested bar's position; meaningless in a log


class _Lines:
    """A stream that turns tqdm's carriage-return frames into whole lines, dropping blank and repeated ones."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.last = None

    def write(self, s: str) -> int:
        for frame in s.replace(_MOVE_UP, "").replace("\r", "\n").split("\n"):
            frame = frame.rstrip()
            if frame and frame != self.last:
                self.stream.write(frame + "\n")
                self.last = frame
        return len(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar: the usual one on a terminal; elsewhere one ASCII line every few seconds plus the final one."""
    stream = kwargs.get("file") or sys.stderr
    if _is_terminal(stream):
        return tqdm(iterable, **kwargs)
    kwargs["file"] = _Lines(stream)
    kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), QUIET_INTERVAL_S)
    kwargs["maxinterval"] = max(kwargs.get("maxinterval", 10.0), kwargs["mininterval"])
    kwargs.setdefault("ascii", True)
    kwargs.setdefault("ncols", 80)
    kwargs["dynamic_ncols"] = False
    return tqdm(iterable, **kwargs)


def quiet_library_bars() -> None:
    """Off a terminal, turn off transformers' and huggingface_hub's own bars (e.g. "Loading weights")."""
    if _is_terminal(sys.stderr):
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except (ImportError, AttributeError):
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except (ImportError, AttributeError):
        pass
