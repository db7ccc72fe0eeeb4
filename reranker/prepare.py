"""Offline preparation: a dump in, sharded token arrays out, which training memory-maps (nanoGPT style).

    dump --iter_members--> shards of members (by decompressed bytes, in a stable order)
         --worker: parse -> clean -> tokenize -> split by document -> windows -> encode_pair-->
    OUT/shards/NNNNNN/{split}_ids.npy      int32, every sample's ids end to end
                      {split}_offsets.npy  int64, n + 1 offsets into ids
                      {split}_labels.npy   int8, 1 positive / 0 negative
                      {split}_kinds.npy    int8, index into reranker.windows.KINDS
                      meta.json            counts and the shard's cleaning report
    OUT/index.json    tokenizer, max_length, delimiter, counts per split, the merged report

Each shard is written atomically and its random generator depends only on (seed, shard index), so a run
interrupted at any point and started again skips the finished shards and ends with exactly the output an
uninterrupted run gives. Memory is bounded by the shard size times the shards in flight, not the dump: mono
text files are read in pieces (corpus.dump), other files whole, up to the member cap.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from corpus.clean import CleanConfig, clean_document
from corpus.dump import Member, ReadConfig, dump_size, iter_members, parse_member
from corpus.modeldir import DEFAULT_PERSONA, atomic_directory, write_file_atomically
from corpus.progress import progress as progress_bar
from corpus.report import Report
from reranker.pairs import delimiter_id, encode_lines, encode_pair
from reranker.windows import KINDS, WindowConfig, make_samples, split_of

# 2: source ids relative to the dump and mono text split by run. The arrays are unchanged, so version 1
# output still loads; a version 1 run cannot be resumed (its shards were split by other ids).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PrepareConfig:
    """Everything that decides the prepared output; a resumed run must use the same."""

    tokenizer: str  # name or path, loaded with AutoTokenizer (offline: a local path)
    window: WindowConfig = field(default_factory=WindowConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    delimiter: str = "|"
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    shard_bytes: int = 4 * 1024 * 1024  # decompressed input per shard
    seed: int = 0
    markov_dir: str | None = None  # a MarkovModel dir (built on the training split) for window.markov_ratio

    def __post_init__(self) -> None:
        if self.shard_bytes < 1:
            raise ValueError(f"shard_bytes must be positive, got {self.shard_bytes}")
        split_of("x", self.val_fraction, self.test_fraction)  # validates the fractions
        if self.window.markov_ratio > 0 and not self.markov_dir:
            raise ValueError(
                "window.markov_ratio > 0 needs markov_dir (--markov-dir), a Markov model directory"
            )

    def to_dict(self) -> dict:
        """JSON-ready settings."""
        return asdict(self)


@lru_cache(maxsize=2)
def load_tokenizer(name_or_path: str):
    """A fast tokenizer by name or local path, once per process."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ValueError(
            f"tokenizer {name_or_path!r} has no [CLS]/[SEP] tokens; a cross-encoder tokenizer is needed"
        )
    return tokenizer


@lru_cache(maxsize=2)
def load_markov(path: str):
    """A MarkovModel from a model dir, or from the `all` persona of a persona folder; once per process."""
    from markov import MarkovModel
    from markov.personas import persona_dirs

    writers = persona_dirs(path)
    return MarkovModel.load(writers.get("all") or writers.get(DEFAULT_PERSONA) or Path(path))


class MarkovLines:
    """A callable for make_samples: token ids of one Markov line per call, sampled in batches from `rng`."""

    def __init__(self, model, tokenizer, batch: int = 256) -> None:
        self.model, self.tokenizer, self.batch = model, tokenizer, batch
        self.buffer: list[list[int]] = []

    def reset(self) -> None:
        """Forget lines drawn but not used, so what comes next depends only on the next rng passed in."""
        self.buffer = []

    def __call__(self, rng: np.random.Generator) -> list[int]:
        if not self.buffer:
            texts = self.model.sample(self.batch, rng)
            self.buffer = [ids for ids in encode_lines(self.tokenizer, texts) if ids][::-1]
        return self.buffer.pop() if self.buffer else []


def special_ids(config: PrepareConfig) -> dict:
    """The ids encode_pair needs, and whether the delimiter had to be added to the vocabulary."""
    tokenizer = load_tokenizer(config.tokenizer)
    delim, added = delimiter_id(tokenizer, config.delimiter)
    return {
        "cls_id": int(tokenizer.cls_token_id),
        "sep_id": int(tokenizer.sep_token_id),
        "pad_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        "delimiter_id": delim,
        "delimiter_added": added,
        "vocab_size": len(tokenizer),
    }


def iter_shards(
    dump: str | os.PathLike, config: PrepareConfig, report: Report
) -> Iterator[tuple[int, list[Member]]]:
    """Group the dump's members, in their stable order, into shards of about `shard_bytes` decompressed bytes."""
    shard: list[Member] = []
    size = 0
    index = 0
    for member in iter_members(dump, report, config.read):
        shard.append(member)
        size += len(member.data)
        if size >= config.shard_bytes:
            yield index, shard
            shard, size, index = [], 0, index + 1
    if shard:
        yield index, shard


def process_shard(index: int, members: list[Member], config: PrepareConfig, out_dir: str) -> dict:
    """Read, clean, tokenize, window and encode one shard, and write it atomically; returns its meta."""
    tokenizer = load_tokenizer(config.tokenizer)
    ids = special_ids(config)
    report = Report()
    docs = []
    for member in members:
        for doc in parse_member(member, report, config.read):
            cleaned = clean_document(doc, config.clean, report)
            if cleaned is not None:
                docs.append(cleaned)
    # One tokenizer call for the whole shard: the batched fast tokenizer is far quicker than per line.
    flat = encode_lines(tokenizer, [line.text for doc in docs for line in doc.lines])
    by_split: dict[str, list[tuple[str, list[list[int]]]]] = {s: [] for s in SPLITS}
    stats = {s: Counter() for s in SPLITS}
    pos = 0
    for doc in docs:
        lines = flat[pos : pos + len(doc.lines)]
        pos += len(doc.lines)
        split = split_of(doc.source_id, config.val_fraction, config.test_fraction)
        by_split[split].append((doc.source_id, lines))
        stats[split].update(documents=1, lines=len(lines), line_tokens=sum(map(len, lines)))
    kind_index = {k: i for i, k in enumerate(KINDS)}
    markov = None
    if config.window.markov_ratio > 0:
        markov = MarkovLines(load_markov(config.markov_dir), tokenizer)
    with atomic_directory(Path(out_dir) / "shards" / f"{index:06d}") as tmp:
        for split_no, split in enumerate(SPLITS):
            # The generator depends only on (seed, shard, split): resumed and uninterrupted runs agree.
            rng = np.random.default_rng([config.seed, index, split_no])
            values: list[int] = []
            offsets = [0]
            labels: list[int] = []
            kinds: list[int] = []
            if markov is not None:
                markov.reset()  # nothing carried over between splits: each depends on its own rng only
            for sample in make_samples(by_split[split], config.window, rng, markov=markov):
                encoded = encode_pair(
                    sample.context,
                    sample.candidate,
                    cls_id=ids["cls_id"],
                    sep_id=ids["sep_id"],
                    delim_id=ids["delimiter_id"],
                    max_length=config.window.max_length,
                )
                values.extend(encoded)
                offsets.append(len(values))
                labels.append(sample.label)
                kinds.append(kind_index[sample.kind])
            np.save(tmp / f"{split}_ids.npy", np.asarray(values, dtype=np.int32))
            np.save(tmp / f"{split}_offsets.npy", np.asarray(offsets, dtype=np.int64))
            np.save(tmp / f"{split}_labels.npy", np.asarray(labels, dtype=np.int8))
            np.save(tmp / f"{split}_kinds.npy", np.asarray(kinds, dtype=np.int8))
            stats[split].update(samples=len(labels), positives=sum(labels), tokens=len(values))
            stats[split].update({f"kind_{KINDS[k]}": n for k, n in Counter(kinds).items()})
        meta = {
            "index": index,
            "members": len(members),
            "input_bytes": sum(len(m.data) for m in members),
            "disk_bytes": sum(m.disk_bytes for m in members),
            "splits": {s: dict(sorted(stats[s].items())) for s in SPLITS},
            "report": report.to_dict(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return meta


def _shard_done(out_dir: Path, index: int) -> dict | None:
    meta = out_dir / "shards" / f"{index:06d}" / "meta.json"
    return json.loads(meta.read_text()) if meta.exists() else None


def _write_json_atomically(path: Path, data: dict) -> None:
    write_file_atomically(path, json.dumps(data, indent=1, sort_keys=True))


def _check_settings(out_dir: Path, settings: dict, overwrite: bool) -> None:
    path = out_dir / "prepare.json"
    if path.exists() and not overwrite:
        previous = json.loads(path.read_text())
        if previous != settings:
            raise ValueError(
                f"{out_dir} holds a preparation made with other settings; pass overwrite=True (--overwrite) "
                "to start again, or choose another output folder"
            )
        return
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json_atomically(path, settings)


_TMP_SHARD = re.compile(r"^\.\d{6}\.(tmp|old)-")


def prepare(
    dump: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: PrepareConfig,
    *,
    workers: int | None = None,
    stop_after: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict | None:
    """Prepare a dump into `out_dir`, resuming finished shards; returns the index (None if stopped early).

    `stop_after` processes at most that many new shards and returns None without writing the index: a
    deterministic interruption, which the tests and a cautious user can use.
    """
    out = Path(out_dir)
    workers = max(1, workers or os.cpu_count() or 1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # processes, not threads, use the cores
    specials = special_ids(config)  # fails early on a bad tokenizer
    settings = {"format_version": FORMAT_VERSION, "dump": str(dump), "config": config.to_dict()}
    _check_settings(out, settings, overwrite)
    shards_dir = out / "shards"
    shards_dir.mkdir(exist_ok=True)
    for leftover in shards_dir.iterdir():  # a killed run's half-written shard
        if _TMP_SHARD.match(leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)

    read_report = Report()  # problems met while walking archives, outside any shard
    metas: dict[int, dict] = {}
    new = 0
    stopped = False
    bar = progress_bar(total=dump_size(dump), unit="B", unit_scale=True, desc="prepare", disable=not progress)
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    pending: dict[Future, int] = {}

    def finish(meta: dict) -> None:
        metas[meta["index"]] = meta
        bar.update(meta["disk_bytes"])

    def drain(limit: int) -> None:
        while len(pending) > limit:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                pending.pop(future)
                finish(future.result())

    try:
        for index, members in iter_shards(dump, config, read_report):
            meta = _shard_done(out, index)
            if meta is not None:
                finish(meta)
                continue
            if stop_after is not None and new >= stop_after:
                stopped = True
                break
            new += 1
            if pool is None:
                finish(process_shard(index, members, config, str(out)))
            else:
                pending[pool.submit(process_shard, index, members, config, str(out))] = index
                drain(workers)  # bounded memory: at most workers + 1 shards in flight
        drain(0)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if stopped:
        return None
    index = build_index(out, config, specials, metas, read_report)
    index["dump"] = str(dump)
    _write_json_atomically(out / "index.json", index)
    return index


def build_index(
    out: Path, config: PrepareConfig, specials: dict, metas: dict[int, dict], read_report: Report
) -> dict:
    """The index.json contents: settings, tokenizer facts, per-split counts and shard list, merged report."""
    report = Report()
    report.merge(read_report)
    totals = {s: Counter() for s in SPLITS}
    shards = []
    for i in sorted(metas):
        meta = metas[i]
        report.merge(Report.from_dict(meta["report"]))
        for s in SPLITS:
            totals[s].update(meta["splits"][s])
        shards.append({"dir": f"shards/{i:06d}", **{s: meta["splits"][s].get("samples", 0) for s in SPLITS}})
    return {
        "format_version": FORMAT_VERSION,
        "tokenizer": config.tokenizer,
        "max_length": config.window.max_length,
        "delimiter": config.delimiter,
        **specials,
        "kinds": list(KINDS),
        "config": config.to_dict(),
        "splits": {s: dict(sorted(totals[s].items())) for s in SPLITS},
        "shards": shards,
        "report": report.to_dict(),
    }


class PreparedSplit:
    """One split of a prepared folder, memory-mapped: `ds[i] -> (input_ids int32 array, label)`."""

    def __init__(self, directory: str | os.PathLike, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.directory = Path(directory)
        index_path = self.directory / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(
                f"{index_path} not found: run `python -m reranker prepare DUMP --out {self.directory}` to completion"
            )
        self.index = json.loads(index_path.read_text())
        if self.index.get("format_version") not in READABLE_VERSIONS:
            raise ValueError(
                f"{index_path} has format_version {self.index.get('format_version')}, expected one of "
                f"{READABLE_VERSIONS}"
            )
        self.split = split
        self.max_length: int = self.index["max_length"]
        self.delimiter_id: int = self.index["delimiter_id"]
        self.delimiter_added: bool = self.index["delimiter_added"]
        self.tokenizer: str = self.index["tokenizer"]
        self._ids: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        labels, kinds, sizes = [], [], []
        for shard in self.index["shards"]:
            if not shard[split]:
                continue
            base = self.directory / shard["dir"]
            self._ids.append(np.load(base / f"{split}_ids.npy", mmap_mode="r"))
            self._offsets.append(np.load(base / f"{split}_offsets.npy"))
            labels.append(np.load(base / f"{split}_labels.npy"))
            kinds.append(np.load(base / f"{split}_kinds.npy"))
            sizes.append(len(labels[-1]))
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.labels: np.ndarray = np.concatenate(labels) if labels else np.zeros(0, np.int8)
        self.kinds: np.ndarray = np.concatenate(kinds) if kinds else np.zeros(0, np.int8)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples in {self.split}")
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        j = i - int(self._starts[shard])
        offsets = self._offsets[shard]
        ids = np.asarray(self._ids[shard][offsets[j] : offsets[j + 1]], dtype=np.int32)  # (T,)
        return ids, int(self.labels[i])

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        for i in range(len(self)):
            yield self[i]
