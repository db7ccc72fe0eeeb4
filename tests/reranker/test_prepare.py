"""prepare: sharded arrays, the loader, resuming after an interruption, splits by document."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from reranker.prepare import PrepareConfig, PreparedSplit, prepare
from reranker.windows import WindowConfig, split_of

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def write_dump(root: Path, n_files: int = 24, cues: int = 40) -> Path:
    """A dump of small .srt files with varied lines, plus a zip holding one good and one corrupt member."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        blocks = []
        for c in range(cues):
            words = rng.choice(WORDS, size=int(rng.integers(2, 12)))
            blocks.append(
                f"{c + 1}\n00:00:{c:02d},000 --> 00:00:{c:02d},900\n{' '.join(words).capitalize()}.\n"
            )
        (root / f"film{f:03d}.srt").write_text("\n".join(blocks), encoding="utf-8")
    good = (root / "film000.srt").read_bytes()
    with zipfile.ZipFile(root / "extra.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inner_ok.srt", good)
        zf.writestr("inner_bad.srt", good * 3)
    data = bytearray((root / "extra.zip").read_bytes())
    at = data.index(b"inner_bad.srt") + len(b"inner_bad.srt")
    for i in range(at + 5, at + 30):
        data[i] ^= 0xFF
    (root / "extra.zip").write_bytes(bytes(data))
    return root


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    return write_dump(tmp_path_factory.mktemp("dump") / "d")


@pytest.fixture(scope="module")
def config(minilm_path) -> PrepareConfig:
    return PrepareConfig(
        tokenizer=minilm_path,
        window=WindowConfig(max_length=48, min_tokens=12, random_line_ratio=0.5),
        val_fraction=0.25,
        test_fraction=0.25,
        shard_bytes=3000,
    )


def snapshot(out: Path) -> dict[str, bytes]:
    """Every output file's bytes (npy and json), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(dump, config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "prepared"
    prepare(dump, out, config, workers=1, progress=False)
    return out


def test_index_and_loader(reference, config, minilm_tokenizer):
    index = json.loads((reference / "index.json").read_text())
    assert index["max_length"] == 48 and index["delimiter"] == "|"
    assert index["delimiter_id"] == 1064 and index["delimiter_added"] is False
    assert len(index["shards"]) > 5
    assert index["report"]["n_problems"] == 1 and "inner_bad.srt" in index["report"]["problems"][0]["source"]
    for split in ("train", "val", "test"):
        ds = PreparedSplit(reference, split)
        assert len(ds) == index["splits"][split]["samples"] > 0
        assert len(ds.labels) == len(ds) and abs(int(ds.labels.sum()) * 2 - len(ds)) <= len(index["shards"])
        ids, label = ds[len(ds) - 1]
        assert ids.dtype == np.int32 and label in (0, 1)
        for i in range(0, len(ds), 7):
            ids, label = ds[i]
            assert len(ids) <= 48 and ids[0] == 101 and ids[-1] == 102 and list(ids).count(102) == 2
            assert label == ds.labels[i]
    text = minilm_tokenizer.decode(PreparedSplit(reference, "train")[0][0])
    assert text.startswith("[CLS] ") and " [SEP] " in text
    with pytest.raises(IndexError):
        PreparedSplit(reference, "train")[10**9]


def test_documents_never_straddle_splits(reference, dump):
    index = json.loads((reference / "index.json").read_text())
    expected = {"train": 0, "val": 0, "test": 0}
    for path in sorted(dump.glob("*.srt")):
        expected[split_of(path.name, 0.25, 0.25)] += 1
    expected[split_of("extra.zip!inner_ok.srt", 0.25, 0.25)] += 1
    assert {s: index["splits"][s]["documents"] for s in expected} == expected


def test_stopped_run_resumes_to_the_same_output(dump, config, reference, tmp_path):
    out = tmp_path / "prepared"
    assert prepare(dump, out, config, workers=1, stop_after=2, progress=False) is None
    assert not (out / "index.json").exists()
    assert len(list((out / "shards").iterdir())) == 2
    prepare(dump, out, config, workers=1, stop_after=3, progress=False)
    assert len(list((out / "shards").iterdir())) == 5
    index = prepare(dump, out, config, workers=1, progress=False)
    assert index is not None
    assert snapshot(out) == snapshot(reference)


def test_two_workers_give_the_same_output(dump, config, reference, tmp_path):
    out = tmp_path / "prepared"
    prepare(dump, out, config, workers=2, progress=False)
    assert snapshot(out) == snapshot(reference)


def test_other_settings_are_refused_unless_overwrite(dump, config, tmp_path):
    out = tmp_path / "prepared"
    prepare(dump, out, config, workers=1, stop_after=1, progress=False)
    other = PrepareConfig(tokenizer=config.tokenizer, shard_bytes=config.shard_bytes, seed=1)
    with pytest.raises(ValueError, match="other settings"):
        prepare(dump, out, other, workers=1, progress=False)
    assert prepare(dump, out, other, workers=1, overwrite=True, progress=False) is not None


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m reranker prepare"):
        PreparedSplit(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        PreparedSplit(tmp_path, "dev")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_output(dump, config, reference, tmp_path, minilm_path):
    """A real SIGKILL in the middle of a CLI run; the second run finishes to the reference output."""
    out = tmp_path / "prepared"
    big = write_dump(tmp_path / "big", n_files=100)
    cmd = [
        sys.executable,
        "-m",
        "reranker",
        "prepare",
        str(big),
        "--out",
        str(out),
        "--tokenizer",
        minilm_path,
        "--max-length",
        "48",
        "--min-tokens",
        "12",
        "--random-line-ratio",
        "0.5",
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0.25",
        "--shard-mb",
        str(3000 / 1024 / 1024),
        "--workers",
        "1",
        "--quiet",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "shards" / "000003" / "meta.json").exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "index.json").exists(), "the run finished before it could be killed"
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clean = tmp_path / "clean"
    prepare(big, clean, config, workers=1, progress=False)
    # prepare.json and index.json name the dump, which is the same folder in both runs.
    assert snapshot(out) == snapshot(clean)


def test_markov_negatives(dump, config, tmp_path):
    from dataclasses import replace

    from markov import MarkovConfig, MarkovModel

    lines = [(" ".join(WORDS[i : i + 5]) + ".", 1.0) for i in range(len(WORDS) - 5)] * 3
    MarkovModel.build(lines, MarkovConfig(order=1)).save(tmp_path / "markov")
    window = replace(config.window, random_line_ratio=0.0, markov_ratio=0.5)
    with pytest.raises(ValueError, match="markov_dir"):
        replace(config, window=window)
    cfg = replace(config, window=window, markov_dir=str(tmp_path / "markov"))
    prepare(dump, tmp_path / "a", cfg, workers=1, progress=False)
    ds = PreparedSplit(tmp_path / "a", "train")
    kinds = np.bincount(ds.kinds, minlength=4)
    assert kinds[3] > 0.15 * len(ds) and kinds[2] == 0  # index 3 is "markov"
    assert abs(int(ds.labels.sum()) * 2 - len(ds)) <= len(
        json.loads((tmp_path / "a/index.json").read_text())["shards"]
    )
    prepare(dump, tmp_path / "b", cfg, workers=2, progress=False)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_prepared_format_versions(reference, tmp_path):
    copy = tmp_path / "p"
    shutil.copytree(reference, copy)
    index = json.loads((copy / "index.json").read_text())
    assert index["format_version"] == 2
    for version, readable in ((1, True), (2, True), (3, False), (None, False)):
        (copy / "index.json").write_text(json.dumps({**index, "format_version": version}))
        if readable:
            assert len(PreparedSplit(copy, "train")) == len(PreparedSplit(reference, "train"))
        else:
            with pytest.raises(ValueError, match="format_version"):
                PreparedSplit(copy, "train")
