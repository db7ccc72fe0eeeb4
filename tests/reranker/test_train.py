"""Training: the loss falls, resume continues from the checkpoint's step, DDP runs, batches are deterministic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from reranker import Reranker
from reranker.train import SampleSet, TrainConfig, epoch_batches, get_lr, train

REPO = Path(__file__).resolve().parents[2]


def toy_samples(n: int, seed: int = 0) -> SampleSet:
    """[CLS] context [SEP] candidate [SEP]; the label is 1 when the candidate is an even token id (learnable)."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for _ in range(n):
        context = rng.integers(9, 56, size=int(rng.integers(2, 10))).tolist()
        candidate = int(rng.integers(9, 56))
        ids.append([2, *context, 3, candidate, 3])
        labels.append(int(candidate % 2 == 0))
    return SampleSet(ids, labels)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def small_config(tmp_path: Path, base: str, **kw) -> TrainConfig:
    defaults = dict(
        base_model=base, max_length=32, batch_size=16, lr=2e-3, warmup_steps=2, max_steps=40, eval_every=20,
        save_every=20, log_every=5, eval_samples=64, seed=0, bf16=False, checkpoint_dir=str(tmp_path / "ckpt"),
    )
    defaults.update(kw)
    return TrainConfig(**defaults)


@pytest.mark.slow
def test_a_few_steps_lower_the_loss(tiny_bert, tmp_path):
    config = small_config(tmp_path, tiny_bert, max_steps=100, eval_every=50, save_every=50, lr=3e-3)
    result = train(toy_samples(1600), toy_samples(128, seed=1), config, tmp_path / "out", progress=False)
    log = read_log(tmp_path / "ckpt" / "train_log.jsonl")
    losses = [r["loss"] for r in log if r["event"] == "train"]
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.1
    evals = [r for r in log if r["event"] == "eval"]
    assert evals[-1]["auc"] > 0.8
    assert result.step == 100 and result.best_metrics["auc"] == max(e["auc"] for e in evals)
    best = Reranker.load(result.best_dir, dtype=torch.float32, warmup=False)
    assert best.config.max_length == 32


def test_resume_continues_from_the_checkpoint_step(tiny_bert, tmp_path):
    train_set, val_set = toy_samples(300), toy_samples(64, seed=1)
    config = small_config(tmp_path, tiny_bert, max_steps=9, save_every=4, eval_every=100)
    train(train_set, val_set, config, tmp_path / "out", progress=False, stop_after=6)  # "killed" after step 6
    state = torch.load(tmp_path / "ckpt" / "last" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 6
    result = train(train_set, val_set, config, tmp_path / "out", resume=True, progress=False)
    starts = [r for r in read_log(tmp_path / "ckpt" / "train_log.jsonl") if r["event"] == "start"]
    assert [s["step"] for s in starts] == [0, 6]
    assert result.step == 9
    # The resumed run matches an uninterrupted one of 9 steps: same batches, same optimizer state.
    whole = small_config(tmp_path, tiny_bert, max_steps=9, save_every=100, eval_every=100,
                         checkpoint_dir=str(tmp_path / "ckpt2"))
    train(train_set, val_set, whole, tmp_path / "out2", progress=False)
    a = Reranker.load(tmp_path / "ckpt" / "last", dtype=torch.float32, warmup=False)
    b = Reranker.load(tmp_path / "ckpt2" / "last", dtype=torch.float32, warmup=False)
    for (name, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)


def test_resume_refuses_other_settings(tiny_bert, tmp_path):
    train_set = toy_samples(100)
    train(train_set, None, small_config(tmp_path, tiny_bert, max_steps=2), tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="same settings"):
        train(train_set, None, small_config(tmp_path, tiny_bert, max_steps=4, max_length=24), tmp_path / "out",
              resume=True, progress=False)


def test_epoch_batches_are_deterministic_bucketed_and_even():
    lengths = np.random.default_rng(0).integers(5, 60, size=1000)
    a = epoch_batches(lengths, 16, seed=3, epoch=0, multiple=4)
    b = epoch_batches(lengths, 16, seed=3, epoch=0, multiple=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert len(a) % 4 == 0
    assert len(np.unique(np.concatenate(a))) == sum(len(x) for x in a)  # no sample twice in an epoch
    c = epoch_batches(lengths, 16, seed=3, epoch=1, multiple=4)
    assert not np.array_equal(a[0], c[0])
    spread = np.mean([lengths[x].max() - lengths[x].min() for x in a])
    assert spread < 10  # bucketed: random batches of 16 would spread about 50


def test_lr_warms_up_then_decays():
    config = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert get_lr(0.0, 0, config) == pytest.approx(1e-4)
    assert get_lr(0.0, 9, config) == pytest.approx(1e-3)
    assert get_lr(0.5, 50, config) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert get_lr(1.0, 100, config) == pytest.approx(1e-4)


def test_train_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(max_minutes=0)


@pytest.mark.slow
def test_ddp_smoke_two_cpu_processes(tiny_bert, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_train import toy_samples, small_config
        from pathlib import Path
        from reranker.train import train
        tmp = Path({str(tmp_path)!r})
        config = small_config(tmp, {tiny_bert!r}, max_steps=4, save_every=2, eval_every=2, log_every=2)
        result = train(toy_samples(200), toy_samples(32, seed=1), config, tmp / "out", progress=False, device="cpu")
        # "done 4" as one write: print("done", step) writes each piece apart, and the two ranks share the
        # stdout pipe, so under PYTHONUNBUFFERED a busy machine interleaved them ("done done4 4").
        print(f"done {{result.step}}", flush=True)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done 4") == 2
    log = read_log(tmp_path / "ckpt" / "train_log.jsonl")
    assert log[0]["world"] == 2
    assert log[-1]["event"] == "end" and log[-1]["step"] == 4
    assert (tmp_path / "ckpt" / "best" / "model.safetensors").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_training_runs_on_gpu(tiny_bert, tmp_path):
    result = train(toy_samples(64), None, small_config(tmp_path, tiny_bert, max_steps=2), tmp_path / "out",
                   progress=False, device="cuda")
    assert result.step == 2
