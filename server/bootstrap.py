"""The embedded default: on a fresh clone, build the Markov model and the reranker that a model dir lacks.

The build reports where it stands on a `BuildStatus` (the server's `/health` shows it while the port is already
open), and holds a lock file in the model dir, so that several worker processes starting at once build it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# The whole first run should fit in 10 minutes: training gets what the Markov build left of this.
FIRST_RUN_MINUTES = 9.5


def has_markov(model_dir: Path) -> bool:
    """True when `model_dir/markov` holds one Markov model or persona subdirs of them."""
    markov = model_dir / "markov"
    if (markov / "config.json").is_file():
        return True
    return markov.is_dir() and any((sub / "config.json").is_file() for sub in markov.iterdir() if sub.is_dir())


def has_reranker(model_dir: Path) -> bool:
    """True when `model_dir/reranker` exists."""
    return (model_dir / "reranker" / "config.json").is_file()


def needs_first_stage(model_dir: Path) -> bool:
    """True when `model_dir/reranker` is an editor without its first stage."""
    reranker = model_dir / "reranker"
    if (reranker / "first_stage" / "config.json").is_file():
        return False
    try:
        settings = json.loads((reranker / "config.json").read_text(encoding="utf-8")).get("riposte", {})
    except (OSError, ValueError, AttributeError):
        return False  # a damaged reranker is the loader's to report
    return isinstance(settings, dict) and settings.get("kind") == "editor"


def missing(model_dir: Path) -> list[str]:
    """The build stages `model_dir` still needs, in order (empty when it is complete)."""
    stages = [] if has_markov(model_dir) else ["markov"]
    if not has_reranker(model_dir):
        stages.append("reranker")
    elif needs_first_stage(model_dir):
        stages.append("first_stage")
    return stages


@dataclass
class BuildStatus:
    """Where a build stands, for `/health` and the page: the stage, stages done of all, and times."""

    stage: str = "checking the model dir"
    done: int = 0
    total: int = 0
    expected_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, stage: str, expected_s: float | None = None) -> None:
        """A stage starts."""
        with self._lock:
            self.stage, self.expected_s = stage, expected_s
        log.info("%s", stage)

    def finish(self) -> None:
        """The current stage is done."""
        with self._lock:
            self.done += 1

    def as_dict(self) -> dict:
        """A snapshot, as /health sends it."""
        with self._lock:
            return {"stage": self.stage, "done": self.done, "total": self.total,
                    "elapsed_s": round(time.monotonic() - self.started, 1), "expected_s": self.expected_s}


def build_default_markov(out_dir: Path, progress: bool = True) -> Path:
    """Build the chitchat Markov model (every line, weight 1) and save it to `out_dir`."""
    from tqdm import tqdm

    from corpus.chitchat import read_chitchat
    from markov import MarkovConfig, MarkovModel

    def lines():
        for doc in tqdm(read_chitchat(), desc="chitchat conversations", unit="conv", disable=not progress):
            for line in doc.lines:
                yield line.text, 1.0

    model = MarkovModel.build(lines(), MarkovConfig())
    model.save(out_dir)
    return out_dir


def can_train() -> bool:
    """Whether the training code imports here (torch and transformers installed)."""
    try:
        import reranker.recipes  # noqa: F401
    except ImportError as exc:
        log.warning("the training code does not import (%s)", exc)
        return False
    return True


@contextlib.contextmanager
def build_lock(model_dir: Path, status: BuildStatus) -> Iterator[None]:
    """Hold `model_dir/.build.lock`; another process building the same dir is waited for, not raced."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / ".build.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            status.begin("waiting for another process that is building the models")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_models(model_dir: str | Path, *, build: bool = True, progress: bool = True,
                  status: BuildStatus | None = None) -> Path:
    """Build what `model_dir` lacks (Markov from chitchat, then the MiniLM editor) unless `build` is False."""
    model_dir = Path(model_dir)
    status = status or BuildStatus()
    stages = missing(model_dir) if build else []
    if "reranker" in stages and not can_train():
        # An install without the training extras can still chat, ranked by the first stage or the prior.
        log.warning("cannot train a reranker here; replies will be ranked by prior")
        stages.remove("reranker")
    if not stages:
        return model_dir
    status.total = len(stages)  # known before any wait, so /health says "building" from the start
    with build_lock(model_dir, status):
        stages = [s for s in missing(model_dir) if s in stages]  # another process may have built some meanwhile
        status.total = status.done + len(stages)
        began = time.monotonic()
        if "markov" in stages:
            status.begin(f"building the Markov model in {model_dir / 'markov'} from chitchat", expected_s=60.0)
            build_default_markov(model_dir / "markov", progress=progress)
            status.finish()
            log.info("Markov model built in %.0f s", time.monotonic() - began)
        if "reranker" in stages:
            from reranker.recipes import train_default

            minutes = max(1.0, FIRST_RUN_MINUTES - (time.monotonic() - began) / 60.0)
            status.begin(f"training the default editor in {model_dir / 'reranker'} (up to {minutes:.0f} minutes)",
                         expected_s=minutes * 60.0)
            start = time.monotonic()
            train_default(model_dir / "reranker", max_minutes=minutes, progress=progress)
            status.finish()
            log.info("reranker trained in %.0f s", time.monotonic() - start)
        if "first_stage" in stages:
            # An editor built before first stages existed: distil one, not the whole editor again.
            from reranker.recipes import build_first_stage

            status.begin(f"building the first stage of the editor in {model_dir / 'reranker'}", expected_s=180.0)
            start = time.monotonic()
            build_first_stage(model_dir / "reranker", progress=progress)
            status.finish()
            log.info("first stage built in %.0f s", time.monotonic() - start)
    return model_dir
