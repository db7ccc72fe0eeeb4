"""The reply index: a persona's writer's lines written in bulk, judged once, embedded once, searched in milliseconds.

A turn writes ~1,000 candidates live and the editor reads a few hundred at most (none under heavy load); judging
sense costs a transformer forward per line. The index moves that work out of the turn:

    write   the persona's writer samples lines in chunks; repeats (by dedupe key) and lines the text rules refuse
            (`corpus.text.LineFilter`: URLs, length, blocklists) are dropped
    judge   the editor's sense model gives each line its logit once ("a person said this" > 0); lines under
            `min_sense` are dropped: the clearly broken share, recorded with the threshold in config.json. The same
            read keeps the editor's whole reading of the line (`Editor.keep`), so a turn scores it with no forward
    embed   the first stage's static vector of each line, unit length, kept as float16
    search  usearch's HNSW graph (inner product). The query is the first stage's own mix of the context's vectors,
            so a hit's similarity is its first-stage score: hits and live candidates sort on one scale

usearch won the measurement in benchmarks/RESULTS.md ("The reply index"): at a million entries its f16 graph has
the recall of hnswlib's and faiss's fp32 ones (0.97 at ef 384) in the least memory, and it is the one that maps its
file instead of reading it (`view=True`) and grows in place.

A saved index is a directory (kind "reply_index"):

    config.json      kind, format_version, count, the fingerprints of the writer, the first stage and the judge it
                     was built with (a changed writer or first stage means a stale index, refused on load), the
                     threshold, what each build dropped, and each data file's size and sha256 (a damaged file is
                     refused on load)
    vectors.usearch  the graph and its f16 vectors, memory-mapped
    lines.bin        the lines, UTF-8, one after another; offsets.npy: where each starts (n + 1 int64)
    meta.npy         (n, 2) float32: the sense logit and the writer's mean log-prob per token of each line
    reads.npy        (format 2, where the build had the editor) (n, W) float16: the editor's kept reading of each
                     line (`Editor.keep`), so a turn scores its hits with the editor's own verdict and no forward
                     pass; `fingerprints["reads"]` names the editor that read them (another editor ignores them)

Every write goes to a temporary sibling that replaces the directory by rename, so a build killed at any point leaves
the previous index whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from corpus import modeldir
from corpus.modeldir import INDEX_DIR, atomic_directory, config_fields  # noqa: F401  (INDEX_DIR re-exported)
from corpus.progress import progress as progress_bar
from corpus.text import LineFilter, LineRules, words
from reranker.runtime import unit

# 2: `reads.npy`, the editor's kept reading of every entry (optional). Format 1 indexes load, without it.
FORMAT_VERSION = 2
READS_VERSIONS = (1, 2)
KIND = "reply_index"
VECTORS_FILE = "vectors.usearch"
LINES_FILE = "lines.bin"
OFFSETS_FILE = "offsets.npy"
META_FILE = "meta.npy"
READS_FILE = "reads.npy"
DATA_FILES = (VECTORS_FILE, LINES_FILE, OFFSETS_FILE, META_FILE)
CHUNK = 4096  # lines written, judged and embedded per step: large batches, and progress every few seconds

log = logging.getLogger(__name__)


class IndexLoadError(ValueError):
    """An index directory that cannot be used: damaged, of another format, or built for another writer."""


class StaleIndexError(IndexLoadError):
    """The index was built with another writer or first stage than the ones it would serve with."""


@dataclass(frozen=True)
class IndexConfig:
    """How entries are searched and what enters: saved with the index."""

    connectivity: int = 32  # the graph's M: 32 reached recall@64 0.97 at 1M with expansion_search 384
    expansion_add: int = 80
    expansion_search: int = 384
    min_sense: float | None = None  # judge logit under which a line is dropped; None: the `drop_share` quantile
    drop_share: float = 0.1  # of the first chunk judged, when min_sense is None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.connectivity < 2 or self.expansion_add < 1 or self.expansion_search < 1:
            raise ValueError("connectivity must be >= 2 and the expansions >= 1")
        if not 0.0 <= self.drop_share < 1.0:
            raise ValueError(f"drop_share must be within [0, 1), got {self.drop_share}")
        if self.min_sense is not None and not math.isfinite(self.min_sense):
            raise ValueError(f"min_sense must be finite, got {self.min_sense}")


@dataclass(frozen=True)
class Hits:
    """An index's answer to one context, best first: the lines, their first-stage scores, judge logits, log-probs,
    and their rows (to look up their kept readings, `ReplyIndex.kept`)."""

    texts: list[str]
    scores: np.ndarray  # (k,) float32: the inner product with the query (the first-stage score at last_line 0)
    sense: np.ndarray  # (k,) float32
    logprob: np.ndarray  # (k,) float64
    rows: np.ndarray | None = None  # (k,) int64


def fingerprint(path: str | os.PathLike, *, skip: tuple[str, ...] = ()) -> str:
    """A sha256 over a file, or over a directory's files (names and bytes, sorted): what a model was built from.

    `skip`: subdirectory names left out (a backend's export cache, made on load, is not the model)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
        and not set(p.relative_to(path).parts[:-1]) & set(skip))
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        with open(file, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class ReplyIndex:
    """Judged writer lines and their first-stage vectors behind an HNSW graph; see the module docstring."""

    def __init__(self, config: IndexConfig, graph, lines: bytes | np.ndarray, offsets: np.ndarray, meta: np.ndarray,
                 info: dict, reads: np.ndarray | None = None) -> None:
        if len(offsets) != len(meta) + 1 or len(graph) != len(meta) or (reads is not None and len(reads) != len(meta)):
            raise IndexLoadError(f"the index's parts disagree: {len(graph)} vectors, {len(meta)} judged lines, "
                                 f"{len(offsets) - 1} lines" + ("" if reads is None else f", {len(reads)} readings"))
        self.config, self.graph, self.lines, self.offsets, self.meta, self.info = config, graph, lines, offsets, meta, info
        self.reads = reads  # (n, W) float16 kept readings, or None (see `kept`)
        self._reads_file = None  # opened on the first `kept` of a mapped index
        self.graph.expansion_search = config.expansion_search
        self.graph.expansion_add = config.expansion_add  # a restored graph starts from usearch's defaults
        self.first_stage = None  # set by `attach`: the model whose context vectors make the queries
        # usearch's Python search shares one query buffer per index: turns on several threads take turns (a search
        # is a millisecond or two, and the GIL would serialize most of it anyway).
        self._search_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def dim(self) -> int:
        """The vectors' dimension (the first stage's)."""
        return int(self.graph.ndim)

    def line(self, row: int) -> str:
        """The text of entry `row`."""
        return self.lines_of([row])[0]

    def lines_of(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """The texts of entries `rows`: their offsets gathered in one call, then plain byte slices. A numpy index a
        line (three on a memory map, each a Python-level call) took 1.6 ms of a 2.7 ms search for 512 hits."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = np.asarray(self.offsets[rows]).tolist(), np.asarray(self.offsets[rows + 1]).tolist()
        data = memoryview(self.lines)
        return [str(data[a:b], "utf-8") for a, b in zip(starts, ends, strict=True)]

    def attach(self, first_stage) -> ReplyIndex:
        """Search with `first_stage`'s context vectors (the model the entries were embedded with); returns self."""
        if first_stage.dim != self.dim:
            raise IndexLoadError(f"the index holds {self.dim}-d vectors but the first stage makes {first_stage.dim}-d ones")
        self.first_stage = first_stage
        return self

    def query_vector(self, context: list[str], last_line: float = 0.0) -> np.ndarray:
        """The first stage's mix of the context's unit vectors (D,), with `last_line` more weight on the last line's
        vector: at 0 its inner product with an entry is that entry's first-stage score."""
        weights = np.asarray(self.first_stage.config.weights, dtype=np.float32) + np.asarray([0.0, last_line],
                                                                                             dtype=np.float32)
        return (weights @ self.first_stage.context_vectors(context)).astype(np.float32)

    def search_vector(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the k nearest entries to `query` (D,) and their inner products, best first."""
        if len(self) == 0 or k < 1 or not np.any(query):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        with self._search_lock:
            matches = self.graph.search(np.asarray(query, dtype=np.float32), min(k, len(self)), threads=1)
        return np.asarray(matches.keys, dtype=np.int64), (1.0 - np.asarray(matches.distances, dtype=np.float32))

    def search(self, context: list[str], k: int = 256, last_line: float = 0.0) -> Hits:
        """The k entries the first stage scores highest for `context` (approximately), best first; `last_line`: more
        weight on the context's last line (`query_vector`)."""
        if self.first_stage is None:
            raise RuntimeError("attach the first stage the index was built with before searching")
        rows, sims = self.search_vector(self.query_vector(context, last_line), k)
        return Hits(self.lines_of(rows), sims.astype(np.float32), self.meta[rows, 0].astype(np.float32),
                    self.meta[rows, 1].astype(np.float64), rows)

    def kept(self, rows: np.ndarray) -> np.ndarray | None:
        """The editor's kept readings (float32) of entries `rows`, or None where the index keeps none.

        A mapped index reads the rows with pread: indexing the mapping instead made the whole file resident (1.3 GB
        of a million entries' readings after 500 turns, against 9 MB this way; 0.7 ms p50, 1.2 ms p99 for 256)."""
        if self.reads is None:
            return None
        rows = np.asarray(rows, dtype=np.int64)
        source = getattr(self.reads, "filename", None)
        if not isinstance(self.reads, np.memmap) or source is None:
            return np.asarray(self.reads[rows], dtype=np.float32)
        if self._reads_file is None:
            self._reads_file = open(source, "rb")  # noqa: SIM115 (kept open for the index's life)
        width = self.reads.shape[1]
        size, fd, start = width * self.reads.dtype.itemsize, self._reads_file.fileno(), self.reads.offset
        buf = b"".join(os.pread(fd, size, start + int(r) * size) for r in rows)
        if len(buf) != size * len(rows):
            raise IndexLoadError(f"{source} is shorter than its header says: the index is damaged; rebuild it")
        return np.frombuffer(buf, dtype=self.reads.dtype).reshape(len(rows), width).astype(np.float32)

    # ---- saving, loading --------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index atomically: the directory is replaced whole or not at all."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            self.graph.save(str(tmp / VECTORS_FILE))
            with open(tmp / LINES_FILE, "wb") as f:
                f.write(bytes(self.lines[: int(self.offsets[-1])]))
            np.save(tmp / OFFSETS_FILE, np.asarray(self.offsets, dtype=np.int64))
            np.save(tmp / META_FILE, np.asarray(self.meta, dtype=np.float32))
            names = DATA_FILES
            if self.reads is not None:
                np.save(tmp / READS_FILE, np.asarray(self.reads, dtype=np.float16))
                names = (*DATA_FILES, READS_FILE)
            files = {name: {"bytes": (tmp / name).stat().st_size, "sha256": _file_sha256(tmp / name)}
                     for name in names}
            settings = {**asdict(self.config), **self.info, "count": len(self), "dim": self.dim, "files": files}
            # An index without readings is what format 1 was: an older riposte can still read it.
            modeldir.write(tmp, KIND, FORMAT_VERSION if self.reads is not None else 1, settings)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, expect: dict[str, str] | None = None, verify: bool = True,
             view: bool = True) -> ReplyIndex:
        """Map a saved index (`view`: the graph and offsets stay on disk until read); refuse it when damaged
        (sizes, and with `verify` the sha256 of every file) or built for another writer or first stage (`expect`:
        {"writer": fingerprint, "first_stage": fingerprint})."""
        from usearch.index import Index

        directory = Path(directory)
        try:
            settings = modeldir.read(directory, "reply index", kind=KIND, hint="rebuild it with `riposte index`")
        except (OSError, ValueError) as exc:
            raise IndexLoadError(str(exc)) from exc
        try:
            config = IndexConfig(**config_fields(IndexConfig, settings, "reply index", reads=READS_VERSIONS))
        except (TypeError, ValueError) as exc:
            raise IndexLoadError(f"{directory}: {exc}") from exc
        for what, value in (expect or {}).items():  # before any hashing: a stale index is refused at once
            if (settings.get("fingerprints") or {}).get(what) != value:
                raise StaleIndexError(f"{directory} was built with another {what.replace('_', ' ')} than this model "
                                      f"dir's: rebuild it with `riposte index`")
        files = settings.get("files")
        if not isinstance(files, dict):
            raise IndexLoadError(f"{directory}/config.json lists no data files: the index is damaged; rebuild it")
        names = (*DATA_FILES, READS_FILE) if READS_FILE in files else DATA_FILES
        for name in names:
            path, want = directory / name, files.get(name) or {}
            if not path.is_file():
                raise IndexLoadError(f"{directory}: {name} is missing; rebuild the index with `riposte index`")
            if path.stat().st_size != want.get("bytes"):
                raise IndexLoadError(f"{path} is damaged ({path.stat().st_size:,} bytes, {want.get('bytes')} written); "
                                  "rebuild the index with `riposte index`")
            if verify and _file_sha256(path) != want.get("sha256"):
                raise IndexLoadError(f"{path} is damaged (its sha256 is not the one written); rebuild the index with "
                                  "`riposte index`")
        try:
            graph = Index.restore(str(directory / VECTORS_FILE), view=view)
        except Exception as exc:  # usearch raises RuntimeError or ValueError on a bad header
            raise IndexLoadError(f"{directory / VECTORS_FILE} cannot be read ({exc})") from exc
        if graph is None:
            raise IndexLoadError(f"{directory / VECTORS_FILE} cannot be read")
        mode = "r" if view else None
        try:
            offsets = np.load(directory / OFFSETS_FILE, mmap_mode=mode)
            meta = np.load(directory / META_FILE, mmap_mode=mode)
            if offsets.ndim != 1 or len(offsets) < 1 or meta.ndim != 2 or meta.shape[1] != 2:
                raise ValueError(f"offsets {offsets.shape}, meta {meta.shape}")
            reads = np.load(directory / READS_FILE, mmap_mode=mode) if READS_FILE in names else None
            if reads is not None and reads.ndim != 2:
                raise ValueError(f"reads {reads.shape}")
            lines = np.memmap(directory / LINES_FILE, dtype=np.uint8, mode="r") if view and offsets[-1] else \
                (directory / LINES_FILE).read_bytes()
            info = {k: settings[k] for k in ("fingerprints", "builds") if k in settings}
            return cls(config, graph, lines, offsets, meta, info, reads)
        except (ValueError, TypeError, IndexError, OSError) as exc:
            raise IndexLoadError(f"{directory}: the index's arrays are damaged ({exc}); rebuild it with "
                                 "`riposte index`") from exc


# ---- building ---------------------------------------------------------------------------------------------


def _empty_graph(config: IndexConfig, dim: int):
    from usearch.index import Index

    return Index(ndim=dim, metric="ip", dtype="f16", connectivity=config.connectivity,
                 expansion_add=config.expansion_add, expansion_search=config.expansion_search)


def write_entries(writer, n: int, rng: np.random.Generator, rules: LineRules, seen: set[str],
                  chunk: int = CHUNK) -> Iterable[tuple[list[str], np.ndarray, dict]]:
    """Chunks of new writer lines that pass the line rules and repeat no key in `seen` (updated): (texts, mean
    log-prob per token, counts). Stops after n lines, or when the writer has little new left to say."""
    line_filter = LineFilter(rules)
    produced, dry = 0, 0
    while produced < n and dry < 3:
        gen = writer.generate(min(chunk, n - produced), rng)
        texts, logprob, counts = [], [], {"written": len(gen.candidates), "repeated": 0, "refused": 0}
        for text, lp in zip(gen.candidates, np.asarray(gen.logprob, dtype=np.float64).tolist(), strict=True):
            text, ws = line_filter.clean(text, words(text))
            key = " ".join(ws)
            if not key or key in seen:
                counts["repeated"] += 1
                continue
            if not line_filter.allows(text, ws):
                counts["refused"] += 1
                continue
            seen.add(key)
            texts.append(text)
            logprob.append(lp if math.isfinite(lp) else -1e3)
        # A small writer runs out of new lines: once three chunks in a row bring under 1% new ones, its index is
        # as large as what it can say, and the build stops instead of spinning.
        dry = dry + 1 if len(texts) < 0.01 * max(1, len(gen.candidates)) else 0
        produced += len(texts)
        yield texts, np.asarray(logprob, dtype=np.float64), counts


@contextlib.contextmanager
def build_lock(directory: Path):
    """Hold the index's build lock (`.NAME.lock` beside it) and tidy what a killed build left: a build that died
    between its two renames left the previous index as `.NAME.old-PID` (put back), and temporaries (removed)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexLoadError(f"another build of {directory} is running; wait for it, or stop it") from None
        try:
            for left in sorted(directory.parent.glob(f".{directory.name}.old-*")):
                if not directory.exists():
                    os.rename(left, directory)
                else:
                    shutil.rmtree(left, ignore_errors=True)
            for left in directory.parent.glob(f".{directory.name}.tmp-*"):
                shutil.rmtree(left, ignore_errors=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_index(directory: str | os.PathLike, writer, judge: Callable[[list[str]], np.ndarray], first_stage, n: int,
                *, fingerprints: dict[str, str], config: IndexConfig | None = None, rules: LineRules | None = None,
                seed: int = 0, add: bool = False, deadline: float = math.inf, progress: bool = True,
                reader: Callable[[list[str]], tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    """Write, judge and embed up to n new entries and save the index at `directory` (with `add`, on top of the one
    there, which must have been built from the same writer and first stage). Returns the build's report.

    `judge(texts)` gives each line's sense logit. With `reader(texts)` instead, one read gives the sense logits and
    the editor's kept readings (`Editor.keep`), stored for the turn; `fingerprints["reads"]` then names that editor.
    Stops early at `deadline` (time.monotonic()), keeping what it has. One build of an index runs at a time
    (`build_lock`).
    """
    directory = Path(directory)
    if reader is not None and "reads" not in fingerprints:
        raise ValueError("an index that keeps readings needs fingerprints['reads'], the editor that read them")
    with build_lock(directory):
        return _build(directory, writer, judge, first_stage, n, fingerprints=fingerprints, config=config,
                      rules=rules, seed=seed, add=add, deadline=deadline, progress=progress, reader=reader)


def _build(directory: Path, writer, judge, first_stage, n: int, *, fingerprints: dict[str, str],
           config: IndexConfig | None, rules: LineRules | None, seed: int, add: bool, deadline: float,
           progress: bool, reader=None) -> dict:
    started = time.monotonic()
    old = None
    if add and (directory / "config.json").is_file():
        old = ReplyIndex.load(directory, expect={k: fingerprints[k] for k in ("writer", "first_stage")}, view=False)
        if old.info.get("fingerprints", {}).get("judge") != fingerprints.get("judge"):
            raise StaleIndexError(f"{directory} was judged by another sense model than this editor's: its scores and "
                                  "threshold would not compare with new ones; rebuild it instead of --add")
        if old.info.get("fingerprints", {}).get("reads") != fingerprints.get("reads"):
            raise StaleIndexError(f"{directory} keeps no readings of this editor's (or keeps another's), so new "
                                  "entries' readings would not match the old ones': rebuild it instead of --add")
        config = old.config
    config = config or IndexConfig()
    graph = old.graph if old is not None else _empty_graph(config, first_stage.dim)
    lines, offsets, meta, reads, builds = bytearray(), [0], [], [], []
    seen: set[str] = set()
    if old is not None:
        lines += bytes(old.lines[: int(old.offsets[-1])])
        offsets = [int(o) for o in old.offsets]
        meta = [np.asarray(old.meta, dtype=np.float32)]
        reads = [np.asarray(old.reads, dtype=np.float16)] if old.reads is not None else []
        builds = list(old.info.get("builds", []))
        seen = {" ".join(words(text)) for text in old.lines_of(np.arange(len(old)))}
    threshold = config.min_sense
    counts = {"written": 0, "repeated": 0, "refused": 0, "judged": 0, "dropped": 0, "added": 0}
    rng = np.random.default_rng([seed, len(builds)])  # each --add its own stream: no re-walk of the same lines
    bar = progress_bar(total=n, desc="index entries", unit="line", disable=not progress)
    rules = rules or LineRules()
    for texts, logprob, written in write_entries(writer, n, rng, rules, seen):
        for k, v in written.items():
            counts[k] += v
        if not texts:
            continue
        kept = None
        if reader is not None:
            sense, kept = reader(texts)
            sense = np.asarray(sense, dtype=np.float32)
        else:
            sense = np.asarray(judge(texts), dtype=np.float32)
        counts["judged"] += len(texts)
        if threshold is None:  # set once, from the first chunk, so every entry meets the same bar
            threshold = float(np.quantile(sense, config.drop_share)) if config.drop_share > 0 else -math.inf
        keep = sense >= threshold
        counts["dropped"] += int((~keep).sum())
        texts = [t for t, k in zip(texts, keep, strict=True) if k]
        vecs = unit(first_stage.embed(texts)).astype(np.float32)
        first_row = len(offsets) - 1
        graph.add(np.arange(first_row, first_row + len(texts), dtype=np.uint64), vecs, threads=os.cpu_count() or 1)
        for text in texts:
            lines += text.encode("utf-8")
            offsets.append(len(lines))
        meta.append(np.stack([sense[keep], logprob[keep].astype(np.float32)], axis=1))
        if kept is not None:
            reads.append(np.asarray(kept, dtype=np.float16)[keep])
        counts["added"] += len(texts)
        bar.update(len(texts) + int((~keep).sum()))
        if time.monotonic() > deadline:
            break
    bar.close()
    finite = threshold is not None and math.isfinite(threshold)
    build = {**counts, "seconds": round(time.monotonic() - started, 1), "min_sense": threshold if finite else None,
             "seed": seed, "asked": n, "rules": rules.record()}
    info = {"fingerprints": dict(fingerprints), "builds": [*builds, build]}
    meta_all = np.concatenate(meta) if meta else np.zeros((0, 2), np.float32)
    reads_all = None
    if reader is not None:
        reads = [r for r in reads if len(r)]  # an empty chunk's (0, 0) would not stack with the others
        reads_all = np.concatenate(reads) if reads else np.zeros((0, 0), np.float16)
    config = IndexConfig(**{**asdict(config), "min_sense": threshold if finite else None})
    index = ReplyIndex(config, graph, bytes(lines), np.asarray(offsets, dtype=np.int64), meta_all, info, reads_all)
    index.save(directory)
    log.info("index %s: %s", directory, json.dumps(build))
    return build
