"""The embedded default: on a fresh clone, build the Markov model and the reranker that a model dir lacks."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def has_markov(model_dir: Path) -> bool:
    """True when `model_dir/markov` holds one Markov model or persona subdirs of them."""
    markov = model_dir / "markov"
    if (markov / "config.json").is_file():
        return True
    return markov.is_dir() and any((sub / "config.json").is_file() for sub in markov.iterdir() if sub.is_dir())


def has_reranker(model_dir: Path) -> bool:
    """True when `model_dir/reranker` exists."""
    return (model_dir / "reranker" / "config.json").is_file()


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


def ensure_models(model_dir: str | Path, *, build: bool = True, progress: bool = True) -> Path:
    """Build what `model_dir` lacks (Markov from chitchat, then the MiniLM reranker) unless `build` is False."""
    model_dir = Path(model_dir)
    if not build:
        return model_dir
    began = time.monotonic()
    if not has_markov(model_dir):
        print(f"riposte: no Markov model in {model_dir}; building it from chitchat", file=sys.stderr)
        start = time.monotonic()
        build_default_markov(model_dir / "markov", progress=progress)
        print(f"riposte: Markov model built in {time.monotonic() - start:.0f} s", file=sys.stderr)
    if not has_reranker(model_dir):
        print(f"riposte: no reranker in {model_dir}; building the default editor (up to 10 minutes)", file=sys.stderr)
        try:
            from reranker.recipes import train_default
        except ImportError as exc:  # an install without the training extras can still chat, ranked by prior
            print(f"riposte: cannot train a reranker here ({exc}); replies will be ranked by prior", file=sys.stderr)
            return model_dir
        start = time.monotonic()
        # The whole first run should fit in 10 minutes: training gets what the Markov build left.
        minutes = max(1.0, 9.5 - (time.monotonic() - began) / 60.0)
        train_default(model_dir / "reranker", max_minutes=minutes, progress=progress)
        print(f"riposte: reranker trained in {time.monotonic() - start:.0f} s", file=sys.stderr)
    elif needs_first_stage(model_dir):
        # An editor built before first stages existed: distil one (a few minutes), not the whole editor again.
        print(f"riposte: the editor in {model_dir / 'reranker'} has no first stage; building it", file=sys.stderr)
        from reranker.recipes import build_first_stage

        start = time.monotonic()
        build_first_stage(model_dir / "reranker", progress=progress)
        print(f"riposte: first stage built in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return model_dir


def needs_first_stage(model_dir: Path) -> bool:
    """True when `model_dir/reranker` is an editor without its first stage."""
    import json

    reranker = model_dir / "reranker"
    if (reranker / "first_stage" / "config.json").is_file():
        return False
    try:
        settings = json.loads((reranker / "config.json").read_text(encoding="utf-8")).get("riposte", {})
    except (OSError, ValueError, AttributeError):
        return False  # a damaged reranker is the loader's to report
    return isinstance(settings, dict) and settings.get("kind") == "editor"
