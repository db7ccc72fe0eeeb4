"""A model dir, loaded or built: the personas' writers, the editor and the first stage, ready for the engine.

    model_dir/markov/        one Markov writer, or a folder of persona writers (markov.personas)
    model_dir/editor/        the editor (any kind `reranker.load` reads); `reranker/` in dirs made before the rename
    model_dir/editor/first_stage/  (or model_dir/first_stage/) the first stage, when there is one
    model_dir/index/<persona>/     a persona's reply index (reranker.index), when `riposte index` built one

`load_engine` is the only place the server imports markov and reranker: the engine runs whatever it is handed.

The embedded default: on a fresh clone, `ensure_models` builds the Markov writer and the editor a model dir lacks.
The build reports where it stands on a `BuildStatus` (the server's `/health` shows it while the port is already
open), and holds a lock file in the model dir, so that several worker processes starting at once build it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from corpus.modeldir import FIRST_STAGE_DIR, INDEX_DIR, MARKOV_DIR, editor_dir
from corpus.modeldir import read as read_settings
from corpus.text import words
from server.engine import Engine, EngineConfig, FirstStageScorer
from server.scheduler import Editor

log = logging.getLogger(__name__)

# The whole first run should fit in 10 minutes: training gets what the Markov build left of this.
FIRST_RUN_MINUTES = 9.5
# ... and the reply index what training left of 10.5 minutes (at least half a minute), up to this many lines:
# a start that `riposte index --add` grows (the sense model judges ~600 lines/s on 2 cores).
FIRST_RUN_INDEX_ENTRIES = 50_000


def has_markov(model_dir: Path) -> bool:
    """True when `model_dir/markov` holds one Markov model or persona subdirs of them."""
    from markov.personas import persona_dirs

    return bool(persona_dirs(model_dir / MARKOV_DIR))


def has_editor(model_dir: Path) -> bool:
    """True when the model dir has an editor (`editor/`, or `reranker/` in an older dir)."""
    return (editor_dir(model_dir) / "config.json").is_file()


def needs_first_stage(model_dir: Path) -> bool:
    """True when the model dir's editor is a default editor without its first stage."""
    editor = editor_dir(model_dir)
    if (editor / FIRST_STAGE_DIR / "config.json").is_file():
        return False
    try:
        return read_settings(editor).get("kind") == "editor"
    except (OSError, ValueError):
        return False  # a damaged editor is the loader's to report


def missing(model_dir: Path) -> list[str]:
    """The build stages `model_dir` still needs, in order (empty when it is complete)."""
    stages = [] if has_markov(model_dir) else ["markov"]
    if not has_editor(model_dir):
        stages.append("editor")
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
    """Build the chitchat Markov model (every cleaned line, weight 1, and its reply words) and save it to `out_dir`."""
    from corpus.chitchat import cleaned_chitchat
    from corpus.progress import progress as progress_bar
    from markov import CHITCHAT_ORDER, MarkovConfig, MarkovModel
    from markov.replies import ReplyWords, with_pairs

    pairs: list[tuple[str, str]] = []

    def lines():
        conversations = progress_bar(cleaned_chitchat(), desc="chitchat conversations", unit="conv", disable=not progress)
        for doc in with_pairs(conversations, pairs):
            for line in doc.lines:
                yield line.text, 1.0

    model = MarkovModel.build(lines(), MarkovConfig(order=CHITCHAT_ORDER))
    model.replies = ReplyWords.build(pairs) if pairs else None
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
                  status: BuildStatus | None = None, rules=None) -> Path:
    """Build what `model_dir` lacks (Markov from chitchat, then the MiniLM editor and a first reply index) unless
    `build` is False; `rules` (a `corpus.text.LineRules`, default the served engine's) decide what the index holds."""
    model_dir = Path(model_dir)
    status = status or BuildStatus()
    stages = missing(model_dir) if build else []
    if "editor" in stages and not can_train():
        # An install whose torch or transformers does not import can still chat, ranked by the prior.
        log.warning("cannot train an editor here; replies will be ranked by prior")
        stages.remove("editor")
    if not stages:
        return model_dir
    status.total = len(stages)  # known before any wait, so /health says "building" from the start
    with build_lock(model_dir, status):
        stages = [s for s in missing(model_dir) if s in stages]  # another process may have built some meanwhile
        status.total = status.done + len(stages)
        began = time.monotonic()
        if "markov" in stages:
            status.begin(f"building the Markov model in {model_dir / MARKOV_DIR} from chitchat", expected_s=60.0)
            build_default_markov(model_dir / MARKOV_DIR, progress=progress)
            status.finish()
            log.info("Markov model built in %.0f s", time.monotonic() - began)
        if "editor" in stages:
            from reranker.recipes import build_default

            minutes = max(1.0, FIRST_RUN_MINUTES - (time.monotonic() - began) / 60.0)
            editor = editor_dir(model_dir)
            status.begin(f"training the default editor in {editor} (up to {minutes:.0f} minutes)",
                         expected_s=minutes * 60.0)
            start = time.monotonic()
            build_default(editor, max_minutes=minutes, progress=progress)  # falls back as `make train-default` does
            status.finish()
            log.info("editor trained in %.0f s", time.monotonic() - start)
            first_run_index(model_dir, max(0.5, FIRST_RUN_MINUTES + 1.0 - (time.monotonic() - began) / 60.0),
                            status, progress, rules)
        if "first_stage" in stages:
            # An editor built before first stages existed: distil one, not the whole editor again.
            from reranker.recipes import build_first_stage

            status.begin(f"building the first stage of the editor in {editor_dir(model_dir)}", expected_s=180.0)
            start = time.monotonic()
            build_first_stage(editor_dir(model_dir), progress=progress)
            status.finish()
            log.info("first stage built in %.0f s", time.monotonic() - start)
    return model_dir


def first_run_index(model_dir: Path, minutes: float, status: BuildStatus, progress: bool, rules=None) -> None:
    """The default persona's first reply index, in what the first run has left; optional: a failure is logged."""
    if first_stage_dir(model_dir) is None or (model_dir / INDEX_DIR / "default").is_dir():
        return
    status.total += 1
    status.begin(f"indexing up to {FIRST_RUN_INDEX_ENTRIES:,} replies in {model_dir / INDEX_DIR} "
                 f"(up to {minutes:.1f} minutes)", expected_s=minutes * 60.0)
    try:
        report = build_index(model_dir, "default", FIRST_RUN_INDEX_ENTRIES, max_minutes=minutes, progress=progress,
                             rules=rules)
    except Exception as exc:  # optional: the editor trained fine, and the server must start with it
        log.warning("no reply index in this first run (%s: %s); build one with `riposte index`",
                    type(exc).__name__, exc)
        return
    finally:
        status.finish()
    log.info("reply index: %d lines in the first run (%.0f s); grow it with `riposte index --add --entries N`",
             report["added"], report["seconds"])


# ---- loading -----------------------------------------------------------------------------------------------


def load_first_stage(directory: str | Path) -> FirstStageScorer:
    """Load a saved first stage (`model_dir/first_stage`); a clear error naming the directory when it is damaged."""
    directory = Path(directory)
    try:
        from reranker.first_stage import FirstStage
    except ImportError as exc:
        raise RuntimeError(f"{directory} holds a first stage, but reranker.first_stage cannot be imported ({exc})") from exc
    try:
        return FirstStage.load(directory)
    except Exception as exc:  # any damage (missing file, bad JSON, wrong shapes, wrong version) is one kind of error
        raise ValueError(
            f"{directory}: cannot load the first stage ({type(exc).__name__}: {exc}); rebuild it with "
            "`python -m reranker train --default`, or remove the directory to order candidates by the Markov prior"
        ) from exc


def load_engine(model_dir: str | Path, config: EngineConfig | None = None, *, require_reranker: bool = True,
                clock: Callable[[], float] = time.monotonic, engine_class: type[Engine] = Engine) -> Engine:
    """An engine over a model dir: the personas (`markov/`), the editor and the first stage when there is one.

    The first stage is `model_dir/first_stage`, or inside the editor's directory, where
    `python -m reranker first-stage` writes it. Without an editor, replies are ranked by the first stage or the
    prior alone (unless `require_reranker`).
    """
    from markov.personas import load_persona_meta, load_personas

    model_dir = Path(model_dir)
    config = config or EngineConfig()
    personas = load_personas(model_dir / MARKOV_DIR)
    seed_replies = config.seed_replies
    for name, model in {id(m): (n, m) for n, m in personas.items()}.values():  # "default" may alias "all"
        model.warm_around()
        if model.backward is None:
            log.warning("the writer of persona %r predates the backward table: its replies are not written around the "
                        "context's words until it is rebuilt (`python -m markov build`)", name)
        elif model.replies is None and seed_replies != "never":
            log.warning("seed_replies is %r, but the writer of persona %r has no reply-word table (built before Markov "
                        "format 5, or from lines that do not say who spoke): its turns write around the context's own "
                        "words", seed_replies, name)
    names, follows = load_persona_meta(model_dir / MARKOV_DIR)
    editor = None
    if editor_dir(model_dir).is_dir():
        from reranker import load as load_editor  # torch and transformers: only when there is an editor

        editor = load_editor(editor_dir(model_dir))
        if not isinstance(editor, Editor):
            raise ValueError(f"{editor_dir(model_dir)} holds a {type(editor).__name__}, which cannot read a turn "
                             "within a budget (it has no score_until); save an editor or a cross-encoder there")
    elif require_reranker:
        raise FileNotFoundError(f"no reranker or editor at {editor_dir(model_dir)}: build the default with "
                                "`python -m reranker train --default`, or train one with `python -m reranker train`")
    found = first_stage_dir(model_dir)
    first_stage = load_first_stage(found) if found else None
    if first_stage is not None and hasattr(first_stage, "add_words"):
        # Every word a persona can write gets its vector now, not at the first turn that writes it.
        for model in {id(m): m for m in personas.values()}.values():
            first_stage.add_words(words(" ".join(model.vocab[2:])))  # 0, 1: the sentinels
    indexes = load_indexes(model_dir, personas, first_stage, config) if first_stage is not None else {}
    return engine_class(personas, editor, config, names=names, follows=follows, first_stage=first_stage,
                        indexes=indexes, clock=clock)


def first_stage_dir(model_dir: Path) -> Path | None:
    """Where the model dir's first stage is (`model_dir/first_stage`, else inside the editor's dir), or None."""
    found = [d for d in (model_dir / FIRST_STAGE_DIR, editor_dir(model_dir) / FIRST_STAGE_DIR) if d.is_dir()]
    return found[0] if found else None


def index_fingerprints(model_dir: Path, persona: str, *, first_stage: str | None = None) -> dict[str, str]:
    """What a persona's reply index depends on: its writer's and the first stage's fingerprints (`first_stage`:
    the latter, computed already, as `load_indexes` does once for every persona)."""
    from markov.personas import persona_dirs
    from reranker.index import fingerprint

    dirs = persona_dirs(Path(model_dir) / MARKOV_DIR)
    if persona not in dirs:
        raise ValueError(f"{model_dir} has no persona {persona!r}; it has: {', '.join(dirs) or 'none'}")
    if first_stage is None:
        stage = first_stage_dir(Path(model_dir))
        if stage is None:
            raise FileNotFoundError(f"{model_dir} has no first stage, which a reply index needs to embed and search "
                                    "lines: give the editor one with `riposte first-stage`")
        first_stage = fingerprint(stage)
    return {"writer": fingerprint(dirs[persona]), "first_stage": first_stage}


def load_indexes(model_dir: Path, personas: dict, first_stage, rules=None) -> dict:
    """Each persona's reply index (`model_dir/index/<persona>`), mapped; a damaged or stale one is skipped with a
    warning, and that persona's turns use live candidates alone. One built under other line rules than `rules`
    (a `corpus.text.LineRules`; the engine's) is used, with a warning: the turn's filter drops what they refuse."""
    from reranker.index import IndexLoadError, ReplyIndex, fingerprint

    out = {}
    root = Path(model_dir) / INDEX_DIR
    if not root.is_dir():
        return out
    stage_print = fingerprint(first_stage_dir(Path(model_dir)))  # once, however many personas have an index
    reader_print = None  # the editor's, hashed once and only if an index keeps readings (~100 MB of weights)
    for name in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            expect = index_fingerprints(model_dir, name, first_stage=stage_print)
            index = ReplyIndex.load(root / name, expect=expect).attach(first_stage)
        except Exception as exc:  # optional by design: any damage leaves that persona on live candidates
            log.warning("reply index %s not used, the turn writes its candidates live: %s", root / name,
                        exc if isinstance(exc, IndexLoadError) else f"{type(exc).__name__}: {exc}")
            continue
        if index.reads is not None and reader_print is None:
            reader_print = fingerprint_of_reader(Path(model_dir)) if has_editor(Path(model_dir)) else "none"
        if index.reads is not None and index.info.get("fingerprints", {}).get("reads") != reader_print:
            # Another editor's readings would score with the wrong vectors: the hits still come, to be read live.
            log.warning("reply index %s keeps the readings of %s: its hits are read by the editor in the turn "
                        "(rebuild it with `riposte index` to score them without reading)", root / name,
                        "another editor" if reader_print != "none" else "an editor this model dir does not have")
            index.reads = None
        if rules is not None:
            warn_other_rules(root / name, index, rules)
        out[name] = index
    for name, model in personas.items():  # an alias (a group chat's "default" is its "all") shares the index
        shared = [other for other in out if personas.get(other) is model]
        if name not in out and shared:
            out[name] = out[shared[0]]
    return out


def warn_other_rules(directory: Path, index, rules) -> None:
    """Log a warning when an index's builds were not all made under `rules` (its entries may break them: a turn's
    filter drops those hits, and fewer reach the reply)."""
    want = rules.record()
    built = [b.get("rules") for b in index.info.get("builds", [])]
    if all(b == want for b in built):
        return
    differ = sorted({k for b in built if b is not None for k in want if b.get(k) != want[k]})
    why = (f"under other line rules ({', '.join(differ)})" if differ else
           "before an index kept its line rules (replies are one sentence by default since)")
    log.warning("reply index %s was built %s: the turn's filter drops the hits today's rules refuse; rebuild it "
                "with `riposte index` to fill it with lines they allow", directory, why)


def build_index(model_dir: str | Path, persona: str = "default", entries: int = 100_000, *, add: bool = False,
                max_minutes: float | None = None, drop_share: float | None = None, seed: int = 0,
                progress: bool = True, rules=None) -> dict:
    """Build (or with `add`, grow) a persona's reply index in `model_dir/index/<persona>`: its writer's lines,
    judged by the editor's sense model (none: every line kept, judged 0), with the editor's kept readings of them
    (`Editor.keep`; an index built without them is grown without them) and embedded by the first stage.

    `rules` (a `corpus.text.LineRules`, default the served engine's: RIPOSTE_* blocklists, lengths and sentences) decide
    which lines may enter, so the index holds no line a turn would refuse on its own.
    """
    import numpy as np

    from markov.personas import persona_dirs
    from reranker.index import IndexConfig
    from reranker.index import build_index as build

    model_dir = Path(model_dir)
    fingerprints = index_fingerprints(model_dir, persona)
    from markov import MarkovModel

    writer = MarkovModel.load(persona_dirs(model_dir / MARKOV_DIR)[persona])
    first_stage = load_first_stage(first_stage_dir(model_dir))
    first_stage.add_words(words(" ".join(writer.vocab[2:])))
    sense = editor = reader = None
    if has_editor(model_dir):
        from reranker import load as load_editor

        editor = load_editor(editor_dir(model_dir))
        sense = getattr(editor, "sense", None)
    if sense is not None:
        judge, fingerprints["judge"] = sense.logits, fingerprint_of_editor(model_dir)
        config = IndexConfig() if drop_share is None else IndexConfig(drop_share=drop_share)
    else:  # nothing to judge with: keep every line the rules pass
        judge, fingerprints["judge"] = (lambda texts: np.zeros(len(texts), np.float32)), "none"
        config = IndexConfig(drop_share=0.0)
    if callable(getattr(editor, "keep", None)):  # one read judges a line and keeps what a turn scores it from

        def reader(texts: list[str]):
            kept = editor.keep(texts)
            return kept[:, -1], kept  # a kept reading's last column is its sense logit, 0 without one (`Editor.keep`)

        fingerprints["reads"] = fingerprint_of_reader(model_dir)
        if add and kept_by(model_dir / INDEX_DIR / persona) is None and (model_dir / INDEX_DIR / persona).is_dir():
            log.warning("%s keeps no readings of the editor (built before index format 2, or without an editor): "
                        "its new entries keep none either; rebuild it without --add to keep them",
                        model_dir / INDEX_DIR / persona)
            reader = None
            del fingerprints["reads"]
    if max_minutes is not None and not max_minutes > 0:
        raise ValueError(f"max_minutes must be > 0, got {max_minutes}")
    if drop_share is not None and (add or sense is None):
        log.warning("--drop-share %s is not used: %s", drop_share, "an index grows with the threshold of its first "
                    "build" if add else "there is no sense model to judge with, so every line is kept")
    if rules is None:
        from server.settings import Settings

        rules = Settings().engine_config()
    deadline = time.monotonic() + max_minutes * 60 if max_minutes is not None else float("inf")
    return build(model_dir / INDEX_DIR / persona, writer, judge, first_stage, entries, fingerprints=fingerprints,
                 config=config, rules=rules, seed=seed, add=add, deadline=deadline, progress=progress, reader=reader)


def kept_by(index_dir: Path) -> str | None:
    """The fingerprint of the editor whose readings an index keeps, None if it keeps none (or cannot be read)."""
    try:
        return (read_settings(index_dir).get("fingerprints") or {}).get("reads")
    except (OSError, ValueError):
        return None


def fingerprint_of_editor(model_dir: Path) -> str:
    """The editor's fingerprint (its sense model's files, not a backend's export cache): which judge scored an index."""
    from reranker.backends import CACHE_DIR
    from reranker.index import fingerprint

    sense_dir = editor_dir(model_dir) / "sense"
    return fingerprint(sense_dir if sense_dir.is_dir() else editor_dir(model_dir), skip=(CACHE_DIR,))


def fingerprint_of_reader(model_dir: Path) -> str:
    """The fingerprint of what an editor's kept readings come from (its encoders and fluency head, not its mix):
    an index's readings serve only an editor with the same one."""
    import hashlib

    from reranker.backends import CACHE_DIR
    from reranker.index import fingerprint

    root = editor_dir(model_dir)
    parts = [fingerprint(root / name, skip=(CACHE_DIR,)) for name in ("biencoder", "fluency.safetensors", "sense")
             if (root / name).exists()]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:32]
