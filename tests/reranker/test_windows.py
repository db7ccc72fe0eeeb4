"""Window invariants (Cross Talk samples) and splits; the pair encoding is tested in tests/reranker/test_pairs.py."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reranker.pairs import encode_pair
from reranker.windows import (
    Sample,
    WindowConfig,
    encoded_length,
    make_samples,
    split_of,
    switched,
    tokenize_documents,
)

CLS, SEP, DELIM = 101, 102, 1064


def build_docs(shape: list[list[int]]) -> list[tuple[str, list[list[int]]]]:
    """Documents whose every line is unique: line k is [uid] * length, so a token names its line."""
    docs, uid = [], 1000
    for d, lengths in enumerate(shape):
        lines = []
        for n in lengths:
            lines.append([uid] * n)
            uid += 1
        docs.append((f"doc{d}", lines))
    return docs


def chunk_of(sample: Sample, docs: dict[str, list[list[int]]]) -> list[list[int]]:
    """The document lines a sample was cut from (context length + 1 lines from its start)."""
    return docs[sample.source_id][sample.start : sample.start + len(sample.context) + 1]


def encode(sample: Sample, max_length: int) -> list[int]:
    return encode_pair(
        sample.context, sample.candidate, cls_id=CLS, sep_id=SEP, delim_id=DELIM, max_length=max_length
    )


doc_shapes = st.lists(st.lists(st.integers(1, 20), min_size=0, max_size=30), min_size=1, max_size=8)
configs = st.builds(
    WindowConfig,
    max_length=st.integers(24, 96),
    min_tokens=st.just(8),
    random_line_ratio=st.sampled_from([0.0, 0.5]),
    keep_short_tail=st.booleans(),
)


@settings(max_examples=80, deadline=None)
@given(shape=doc_shapes, config=configs, seed=st.integers(0, 2**31))
def test_samples_do_not_overlap_and_negatives_are_swaps(shape, config, seed):
    docs = build_docs(shape)
    by_id = dict(docs)
    samples = list(make_samples(docs, config, np.random.default_rng(seed)))
    used: Counter = Counter()
    for s in samples:
        chunk = chunk_of(s, by_id)
        assert len(chunk) == len(s.context) + 1 >= 2
        for line in chunk:
            used[(s.source_id, line[0])] += 1
        if s.kind == "positive":
            assert s.label == 1 and s.context + [s.candidate] == chunk
        elif s.kind == "swap":
            assert s.label == 0
            assert s.context + [s.candidate] == [chunk[-1], *chunk[1:-1], chunk[0]]
        else:
            assert s.kind == "random" and s.label == 0
            assert s.context == chunk[:-1]
            owner = next(src for src, lines in docs if s.candidate in lines)
            assert owner != s.source_id
    # No line of any document belongs to two samples.
    assert all(count == 1 for count in used.values())
    labels = Counter(s.label for s in samples)
    assert abs(labels[1] - labels[0]) <= 1


@settings(max_examples=80, deadline=None)
@given(shape=doc_shapes, config=configs, seed=st.integers(0, 2**31))
def test_candidate_is_never_truncated(shape, config, seed):
    docs = build_docs(shape)
    for s in make_samples(docs, config, np.random.default_rng(seed)):
        ids = encode(s, config.max_length)
        assert len(ids) <= config.max_length
        assert ids[-len(s.candidate) - 2 :] == [SEP, *s.candidate, SEP]
        assert ids[0] == CLS


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31), max_line=st.integers(3, 10), short_docs=st.booleans())
def test_length_distribution_is_flat(seed, max_line, short_docs):
    rng = np.random.default_rng(seed)
    # Short documents are the hard case: a long target often runs past a document's end.
    low, high, n_docs = (15, 60, 1500) if short_docs else (100, 400, 160)
    shape = [list(rng.integers(1, max_line + 1, size=int(rng.integers(low, high)))) for _ in range(n_docs)]
    config = WindowConfig(max_length=128, min_tokens=16)
    samples = list(make_samples(build_docs(shape), config, np.random.default_rng(seed)))
    lengths = np.array([encoded_length(map(len, s.context), len(s.candidate)) for s in samples])
    assert len(lengths) > 1000
    assert lengths.min() >= 16 - max_line and lengths.max() <= 128
    counts, _ = np.histogram(lengths, bins=4, range=(16, 129))
    shares = counts / counts.sum()
    # Flat: a quarter per bin, within sampling noise and line granularity.
    assert np.all(np.abs(shares - 0.25) < 0.03), shares


def test_balanced_on_a_long_stream():
    shape = [[5] * 50 for _ in range(100)]
    samples = list(make_samples(build_docs(shape), WindowConfig(), np.random.default_rng(0)))
    kinds = Counter(s.kind for s in samples)
    assert abs(kinds["positive"] - kinds["swap"]) <= 1 and kinds["positive"] > 100


def test_extra_negative_kinds_mix_by_ratio():
    shape = [[4] * 60 for _ in range(200)]
    config = WindowConfig(max_length=64, min_tokens=16, random_line_ratio=0.3, markov_ratio=0.3)
    markov_line = [7, 7, 7]
    samples = list(
        make_samples(build_docs(shape), config, np.random.default_rng(1), markov=lambda rng: markov_line)
    )
    kinds = Counter(s.kind for s in samples)
    negatives = kinds["swap"] + kinds["random"] + kinds["markov"]
    assert abs(kinds["positive"] - negatives) <= 1
    assert abs(kinds["random"] / negatives - 0.3) < 0.05
    assert abs(kinds["markov"] / negatives - 0.3) < 0.05
    assert all(s.candidate == markov_line for s in samples if s.kind == "markov")


def test_markov_ratio_needs_a_callable():
    with pytest.raises(ValueError, match="markov"):
        list(make_samples(build_docs([[3] * 10]), WindowConfig(markov_ratio=0.5), np.random.default_rng(0)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_length": 4},
        {"min_tokens": 200},
        {"random_line_ratio": 1.5},
        {"random_line_ratio": 0.6, "markov_ratio": 0.6},
    ],
)
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        WindowConfig(**kwargs)


def test_overlong_lines_break_a_document_and_are_never_used():
    config = WindowConfig(max_length=32, min_tokens=8, keep_short_tail=True)
    docs = build_docs([[3, 3, 3, 40, 3, 3, 0, 3, 3]])
    samples = list(make_samples(docs, config, np.random.default_rng(0)))
    lines = docs[0][1]
    long_uid, empty_uid = lines[3][0], lines[6]
    for s in samples:
        flat = {tok for line in [*s.context, s.candidate] for tok in line}
        assert long_uid not in flat and empty_uid not in s.context
    assert samples  # the short runs on either side still produce samples


def test_identical_first_and_last_line_is_skipped_not_a_fake_negative():
    lines = [[1], [2], [1], [3]] * 40
    samples = list(
        make_samples([("d", lines)], WindowConfig(max_length=16, min_tokens=5), np.random.default_rng(0))
    )
    swaps = [s for s in samples if s.kind == "swap"]
    assert swaps
    for s in swaps:
        chunk = lines[s.start : s.start + len(s.context) + 1]
        assert chunk[0] != chunk[-1] and s.context + [s.candidate] != chunk


def test_tokenize_documents_matches_the_tokenizer(minilm_tokenizer):
    from corpus.documents import Document, Line

    doc = Document("x", [Line("Hello there!"), Line("General Kenobi.")])
    [(source_id, ids)] = list(tokenize_documents([doc], minilm_tokenizer, batch_size=1))
    assert source_id == "x"
    assert ids == [minilm_tokenizer(t, add_special_tokens=False)["input_ids"] for t in doc.texts()]


def test_splits_are_disjoint_with_the_asked_fractions():
    ids = [f"chitchat/{i}" for i in range(40_000)]
    splits = Counter(split_of(i, 0.1, 0.05) for i in ids)
    assert set(splits) == {"train", "val", "test"}
    assert abs(splits["val"] / len(ids) - 0.1) < 0.01
    assert abs(splits["test"] / len(ids) - 0.05) < 0.01
    assert split_of("a", 0.0, 0.0) == "train" and split_of("a", 0.0, 1.0) == "test"
    with pytest.raises(ValueError):
        split_of("a", 0.7, 0.7)


def test_same_imdb_id_lands_in_one_split():
    for imdb in range(1, 400):
        variants = [
            f"en/2010/{imdb}/{imdb * 7}.xml.gz",
            f"dump.zip!OpenSubtitles/xml/en/1999/{imdb}/55.xml",
            f"Some Film (2004) tt{imdb:07d}.srt",
        ]
        assert len({split_of(v, 0.3, 0.3) for v in variants}) == 1


def test_splits_are_stable_across_processes():
    ids = [f"doc-{i}" for i in range(200)]
    here = [split_of(i, 0.2, 0.2) for i in ids]
    code = "from reranker.windows import split_of; print(','.join(split_of(f'doc-{i}', 0.2, 0.2) for i in range(200)))"
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": hash_seed},
        )
        assert out.stdout.strip().split(",") == here


@given(st.lists(st.integers(0, 6), min_size=1, max_size=6), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_a_switched_context_keeps_its_last_line_after_consecutive_lines_of_another_document(sizes, n, seed):
    from corpus.documents import Document, Line

    docs = [Document(f"d{d}", [Line(f"d{d} {i}") for i in range(size)]) for d, size in enumerate(sizes)]
    context = [f"mine {i}" for i in range(n)]
    out = switched(context, docs, 0, np.random.default_rng(seed))
    assert len(out) == n and out[-1] == context[-1]
    if out == context:  # nothing could stand in: one line, or no other document of n - 1 lines
        assert n == 1 or all(size < n - 1 for size in sizes[1:])
        return
    source = {line.split()[0] for line in out[:-1]}
    assert len(source) == 1 and source != {"d0"}  # one other document's lines
    firsts = [int(line.split()[1]) for line in out[:-1]]
    assert firsts == list(range(firsts[0], firsts[0] + n - 1))  # consecutive, in order
