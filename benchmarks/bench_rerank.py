"""Scoring speed: riposte's cross-encoder and default editor vs sentence-transformers' peers vs the FLOP limit.

4,096 candidates of 3-25 words (cut from chitchat lines) against one 3-line context, the same MiniLM-L6
weights for every scorer. The limit is this machine's bf16 matmul peak, measured in the same run, divided
by the model's FLOPs per candidate at the candidates' real (unpadded) token lengths.
- cross-encoder: `Reranker.score` vs `CrossEncoder.predict` (each pair is one forward of context + candidate);
- the default editor (bi-encoder + fluency head): `Editor.score` vs `SentenceTransformer.encode` + cosine, the
  bi-encoder a user would otherwise pick (each candidate is one forward of itself; the context once).

    .venv/bin/python benchmarks/bench_rerank.py [--repeats 3] [--n 4096]

With --backends: the default editor on each inference backend (torch fp32, ONNX Runtime fp32 and int8, OpenVINO)
and the peers a user could pick instead (sentence-transformers on torch, ONNX and OpenVINO; fastembed), on real
turns: contexts from held-out chitchat and from the subtitle samples, 512 Markov-writer candidates each. Quality
is measured against the torch fp32 scores (bf16 is the reference where the CPU has it; this script uses fp32
everywhere): top-1 agreement and recall@10 (how much of the reference top 10 each path keeps in its top 10).

    .venv/bin/python benchmarks/bench_rerank.py --backends [--model models/default/reranker] [--turns 40] [--n 512]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from measure import timed  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from corpus.chitchat import read_chitchat  # noqa: E402
from corpus.modeldir import editor_dir  # noqa: E402
from reranker import Reranker  # noqa: E402
from reranker.runtime import cpu_has_bf16, default_backbone  # noqa: E402


def make_inputs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A 3-line context and n candidates of 3-25 words, cut from chitchat utterances."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    lines: list[str] = []
    for i, doc in enumerate(read_chitchat()):
        for text in doc.texts():
            lines.append(text)
            words.extend(text.split())
        if i >= 300:
            break
    candidates = []
    for _ in range(n):
        k = int(rng.integers(3, 26))
        start = int(rng.integers(0, len(words) - k))
        candidates.append(" ".join(words[start : start + k]))
    return lines[:3], candidates



def bf16_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best measured bf16 matmul rate on this machine, in FLOP/s."""
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    best = min(timed(lambda: a @ b, repeats))
    return 2 * size**3 / best


def flops_per_candidate(config, n_tokens: float) -> float:
    """Forward FLOPs of one encoded pair of n_tokens: the dense layers plus the attention products."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * (4 * h * h + 2 * h * inter)  # Q, K, V, O and the two feed-forward matmuls, per token
    attention = 2 * 2 * n_tokens * h  # QK^T and attention x V, per token
    return layers * n_tokens * (dense + attention)


def report(name: str, n: int, seconds: list[float]) -> float:
    """Print min/median candidates per second; return the best rate."""
    best, median = n / min(seconds), n / statistics.median(seconds)
    print(f"{name:<42} best {best:8.0f} cand/s   median {median:8.0f} cand/s")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="candidates (4096; 512 per turn with --backends)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-st", action="store_true", help="skip sentence-transformers (it is slow)")
    parser.add_argument("--backends", action="store_true", help="the editor's inference backends against the peers")
    parser.add_argument("--model", default=None, help="editor directory (--backends; default: models/default's)")
    parser.add_argument("--turns", type=int, default=40, help="real turns, half chitchat, half subtitles (--backends)")
    parser.add_argument("--fastembed-python", default=None,
                        help="an interpreter with fastembed installed, for its row (--backends)")
    parser.add_argument("--peer-python", default=None,
                        help="an interpreter whose sentence-transformers has optimum (onnx, openvino), for those rows")
    parser.add_argument("--samples", default=str(Path(__file__).resolve().parents[2] / "shared" / "samples"),
                        help="subtitle samples for the held-out contexts (--backends)")
    args = parser.parse_args()
    if args.backends:
        args.n = args.n or 512
        return compare_backends(args)
    args.n = args.n or 4096

    context, candidates = make_inputs(args.n)
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}; {args.n} candidates vs a 3-line context")

    with tempfile.TemporaryDirectory() as tmp:
        Reranker.from_backbone(default_backbone()).save(Path(tmp) / "rr")
        rr = Reranker.load(Path(tmp) / "rr")
    encoded = rr.encode(context, candidates)
    mean_tokens = float(np.mean([len(e) for e in encoded]))
    print(f"riposte dtype {rr.dtype}, mean encoded length {mean_tokens:.1f} tokens, batch_tokens {rr.batch_tokens}")

    riposte_best = report("riposte Reranker.score", args.n, timed(lambda: rr.score(context, candidates), args.repeats))

    limit = None
    if cpu_has_bf16():  # without native bf16 the matmul is emulated: minutes to measure, and no limit worth quoting
        peak = bf16_peak()
        flops = flops_per_candidate(rr.model.config, mean_tokens)
        limit = peak / flops
        print(f"bf16 matmul peak {peak / 1e9:.0f} GFLOP/s; {flops / 1e6:.0f} MFLOP per candidate -> limit {limit:.0f} cand/s")
    else:
        print("no native bf16 on this CPU (fp32 everywhere): the bf16 FLOP limit is not measured")

    st_best = None
    if not args.skip_st:
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(default_backbone(), num_labels=1, device="cpu")
        pairs = [(" | ".join(context), c) for c in candidates]
        st_best = report(
            "sentence-transformers CrossEncoder.predict",
            args.n,
            timed(lambda: ce.predict(pairs, batch_size=32, show_progress_bar=False), max(1, args.repeats - 1)),
        )

    from reranker.editor import Editor

    editor = Editor.from_backbone()

    def editor_score():
        editor._contexts.clear()  # the context is embedded in every repeat, as in a turn's first slice
        return editor.score(context, candidates)

    editor_best = report("riposte Editor.score (the default editor)", args.n, timed(editor_score, args.repeats))
    st_bi_best = None
    if not args.skip_st:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(default_backbone(), device="cpu")

        def st_score():
            vecs = st.encode([" ".join(context), *candidates], batch_size=32, normalize_embeddings=True)
            return vecs[1:] @ vecs[0]

        st_bi_best = report("sentence-transformers encode + cosine", args.n, timed(st_score, max(1, args.repeats - 1)))

    if limit:
        print(f"riposte / limit: {riposte_best / limit:.0%} (target >= 50%)")
    if st_best:
        print(f"riposte / sentence-transformers: {riposte_best / st_best:.2f}x (target >= 3x)")
    print(f"editor / cross-encoder: {editor_best / riposte_best:.2f}x")
    if st_bi_best:
        print(f"editor / sentence-transformers bi-encoder: {editor_best / st_bi_best:.2f}x")


# ---- --backends: the editor's inference backends vs the peers, on real turns --------------------------------------

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")


def real_turns(n_turns: int, n_candidates: int, samples: str, seed: int = 0) -> list[tuple[str, list[str], list[str]]]:
    """(source, 3-line context, candidates) turns: held-out chitchat and subtitle contexts, Markov-writer candidates."""
    from reranker.__main__ import build_markov, read_split

    rng = np.random.default_rng(seed)
    sources = [("chitchat", read_split("chitchat", "test", 400)[0])]
    subtitles = [str(p) for p in (Path(samples) / "srt", Path(samples) / "opus_xml") if p.is_dir()]
    if subtitles:
        sources.append(("subtitles", read_split(subtitles, "all")[0]))
    else:
        print(f"no subtitle samples under {samples}: chitchat contexts only")
    writer = build_markov("chitchat")  # the train split: it never saw the held-out conversations
    turns = []
    for k, (name, docs) in enumerate(sources):
        want = n_turns // len(sources) + (k < n_turns % len(sources))
        spots = [(d, i) for d, doc in enumerate(docs) for i in range(3, len(doc.lines))]
        for p in rng.choice(len(spots), size=min(want, len(spots)), replace=False):
            d, i = spots[p]
            context = [line.text for line in docs[d].lines[i - 3 : i]]
            candidates = list(dict.fromkeys(writer.generate(2 * n_candidates, rng).candidates))[:n_candidates]
            turns.append((name, context, candidates))
    return turns


def agreement(scores: list[np.ndarray], reference: list[np.ndarray]) -> tuple[float, float]:
    """Top-1 agreement and recall@10 (share of the reference top 10 in the path's top 10), averaged over turns."""
    top1 = np.mean([np.argmax(s) == np.argmax(r) for s, r in zip(scores, reference, strict=True)])
    recall = np.mean([len(set(np.argsort(-s)[:10]) & set(np.argsort(-r)[:10])) / 10
                      for s, r in zip(scores, reference, strict=True)])
    return float(top1), float(recall)


def st_peer(path: str, backend: str):
    """sentence-transformers' encode + cosine on `backend`, or the reason it cannot run here."""
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(path, device="cpu", backend=backend, local_files_only=True)
    except Exception as exc:  # noqa: BLE001  (ImportError for a missing optimum, OSError offline, ...)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"

    def score(context: list[str], candidates: list[str]) -> np.ndarray:
        vecs = st.encode([" ".join(context), *candidates], batch_size=32, normalize_embeddings=True)
        return vecs[1:] @ vecs[0]

    return score


# The peers' scripts each define `turns` and `score(context, candidates)`; this times them the same way (one warm-up,
# then every turn) and prints the seconds and the first turn's scores as JSON for `run_peer`.
TIMING_LOOP = """
score(turns[0][0], turns[0][1][:64])
seconds, first = 0.0, None
for context, candidates in turns:
    t0 = time.perf_counter(); s = score(context, candidates); seconds += time.perf_counter() - t0
    first = s.tolist() if first is None else first
print(json.dumps({"seconds": seconds, "first": first}))
"""

ST_SCRIPT = """
import json, sys, time
import numpy as np
import torch
from sentence_transformers import SentenceTransformer
backend, model_dir, turns_file, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
st = SentenceTransformer(model_dir, device="cpu", backend=backend, local_files_only=True)
turns = json.load(open(turns_file))
def score(context, candidates):
    vecs = st.encode([" ".join(context), *candidates], batch_size=32, normalize_embeddings=True)
    return vecs[1:] @ vecs[0]
""" + TIMING_LOOP


def run_peer(python: str, script: str, args: list[str]) -> tuple[float, np.ndarray] | str:
    """Run a peer's timing script in its own interpreter: (seconds, first turn's cosines) or why it failed."""
    import json
    import subprocess

    done = subprocess.run([python, "-c", script, *args], capture_output=True, text=True)
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1][:200] if done.stderr.strip() else done.returncode}"
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return float(out["seconds"]), np.asarray(out["first"], dtype=np.float32)


def export_token_graph(model: torch.nn.Module, path: Path, opset: int = 17) -> None:
    """Write `model` as an ONNX graph of token-level outputs (B, T, H), for tools that pool on their own (peers)."""
    import warnings

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    ids = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]], dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHidden(model.float().eval()), (ids, (ids != 0).long(), torch.zeros_like(ids)), str(path),
                          input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=opset, dynamo=False)


FASTEMBED_SCRIPT = """
import json, sys, time
import numpy as np
from fastembed import TextEmbedding
from fastembed.common.model_description import ModelSource, PoolingType
model_dir, turns_file, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
TextEmbedding.add_custom_model(model="riposte/minilm-local", pooling=PoolingType.MEAN, normalization=True,
                               sources=ModelSource(hf="riposte/minilm-local"), dim=384, model_file="onnx/model.onnx")
model = TextEmbedding("riposte/minilm-local", specific_model_path=model_dir, threads=threads, lazy_load=False)
turns = json.load(open(turns_file))
def score(context, candidates):
    vecs = np.stack(list(model.embed([" ".join(context), *candidates], batch_size=64)))
    return vecs[1:] @ vecs[0]
""" + TIMING_LOOP


def fastembed_peer(bi_dir: str, turns: list, python: str | None, tmp: Path) -> tuple[float, np.ndarray] | str:
    """fastembed's TextEmbedding (mean pooling, ONNX Runtime) on the same weights: (seconds, first turn's cosines) or why not.

    fastembed downloads its models from the hub, which this machine cannot reach, so it is handed a local export of
    our MiniLM (token-level outputs; fastembed pools). It runs in its own interpreter (`--fastembed-python`):
    installing it here would move huggingface_hub 2.x back to 1.x under transformers 5.
    """
    import json
    import shutil

    if not python:
        return ("pass --fastembed-python PY, an interpreter with fastembed installed (`pip install fastembed` would "
                "downgrade huggingface_hub under transformers 5 here); its hub models are unreachable offline")
    from transformers import AutoModel

    model_dir = tmp / "fastembed-minilm"
    (model_dir / "onnx").mkdir(parents=True)
    export_token_graph(AutoModel.from_pretrained(bi_dir, local_files_only=True), model_dir / "onnx" / "model.onnx")
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(Path(bi_dir) / name, model_dir / name)
    tok_config = json.loads((Path(bi_dir) / "tokenizer_config.json").read_text())
    tok_config["model_max_length"] = 64  # our bi-encoder's max_length, so both read the same tokens
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return run_peer(python, FASTEMBED_SCRIPT, [str(model_dir), str(turns_file(turns, tmp)), str(torch.get_num_threads())])


def turns_file(turns: list, tmp: Path) -> Path:
    """The turns as JSON [[context, candidates], ...] for a peer in another interpreter."""
    import json

    path = tmp / "turns.json"
    path.write_text(json.dumps([[context, candidates] for _, context, candidates in turns]))
    return path


def compare_backends(args) -> None:
    """Every backend and peer on the same real turns, interleaved turn by turn so background load hits all alike."""
    import platform
    import shutil

    from reranker.backends import CACHE_DIR
    from reranker.editor import Editor
    from reranker.runtime import cpu_flags, has_vnni

    flags = cpu_flags()
    model_name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                      platform.processor())
    simd = " ".join(sorted(f for f in flags if f.startswith(("avx", "amx", "fma")) or f in ("f16c",)))
    print(f"machine: {model_name}; {torch.get_num_threads()} threads; {simd}; int8 VNNI: {has_vnni(flags)}; "
          f"native bf16: {cpu_has_bf16()}")
    print("reference: torch fp32 (no bf16 on this CPU)" if not cpu_has_bf16() else
          "reference: torch fp32 (bf16 would be faster here; this script compares fp32 paths)")

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else editor_dir(ROOT / "models" / "default")
        if not (model / "config.json").is_file():
            print(f"{model} is not an editor directory: the untrained editor on the embedded MiniLM instead")
            model = Editor.from_backbone().save(Path(tmp) / "editor")
        turns = real_turns(args.turns, args.n, args.samples)
        n_cands = sum(len(c) for _, _, c in turns)
        print(f"{len(turns)} turns ({', '.join(f'{s} {sum(t[0] == s for t in turns)}' for s in ('chitchat', 'subtitles'))}), "
              f"{n_cands} candidates, mean {np.mean([len(x.split()) for t in turns for x in t[2]]):.1f} words")

        paths = {}
        for backend in BACKENDS:
            t0 = time.perf_counter()
            editor = Editor.load(model, backend=backend)
            if editor.biencoder.backend != backend:
                print(f"  {backend}: unavailable here, it fell back to {editor.biencoder.backend}")
                continue
            paths[f"riposte {backend}"] = editor
            print(f"  riposte {backend}: loaded (export or cache) in {time.perf_counter() - t0:.1f} s")

        def editor_score(editor, refine: bool = True):
            def score(context, candidates):
                editor._contexts.clear()  # each turn pays for its own context, as in serving
                if refine:
                    return editor.score(context, candidates)
                return editor.score_until(context, candidates, math.inf)[0]  # what a turn's slices see
            return score

        runners = {name: editor_score(e) for name, e in paths.items()}
        before = Editor.load(model, backend="torch")
        before.biencoder.batch_tokens = 4096  # the editor before this change: torch, batches of 4,096 padded tokens
        runners = {"riposte torch, before (batch 4096)": editor_score(before), **runners}
        if "riposte onnx-int8" in paths:  # the int8 scores alone, before the pick's refine
            runners["riposte onnx-int8, no refine"] = editor_score(paths["riposte onnx-int8"], refine=False)
        peers = {}
        bi_dir = str(Path(model) / "biencoder")
        for backend in ("torch", "onnx", "openvino"):
            peer = st_peer(bi_dir, backend)
            if callable(peer):
                runners[f"sentence-transformers {backend}"] = peer
            else:  # the reason it cannot run in this interpreter
                peers[f"sentence-transformers {backend}"] = peer

        for fn in runners.values():  # warm-up: first shapes, thread pools
            fn(turns[0][1], turns[0][2][:64])
        seconds = dict.fromkeys(runners, 0.0)
        scores: dict[str, list[np.ndarray]] = {name: [] for name in runners}
        for _, context, candidates in turns:
            for name, fn in runners.items():
                t0 = time.perf_counter()
                scores[name].append(np.asarray(fn(context, candidates), dtype=np.float32))
                seconds[name] += time.perf_counter() - t0

        # Peers in their own interpreters run after the others, not interleaved: busier or quieter minutes count.
        own = paths["riposte torch"].biencoder.score(turns[0][1], turns[0][2])
        outside = {"fastembed": lambda: fastembed_peer(bi_dir, turns, args.fastembed_python, Path(tmp))}
        for backend in ("onnx", "openvino"):
            name = f"sentence-transformers {backend}"
            if name in peers and args.peer_python:
                peers.pop(name)
                clean = Path(tmp) / f"st-{backend}"  # the HF files only: no riposte graph cache for it to find
                shutil.copytree(bi_dir, clean, ignore=shutil.ignore_patterns(CACHE_DIR))
                outside[name] = lambda b=backend, d=clean: run_peer(args.peer_python, ST_SCRIPT, [
                    b, str(d), str(turns_file(turns, Path(tmp))), str(torch.get_num_threads())])
        for name, run in outside.items():
            result = run()
            if isinstance(result, tuple):
                seconds[f"{name} (own process)"] = result[0]
                print(f"{name}: cosines vs our bi-encoder's on turn 1 differ by at most {np.abs(result[1] - own).max():.1e}")
            else:
                peers[name] = result

    reference = scores["riposte torch"]
    torch_rate = n_cands / seconds["riposte torch, before (batch 4096)"]
    print(f"\n{'path':<46} {'cand/s':>8} {'x before':>8} {'top-1':>6} {'R@10':>6}")
    for name in seconds:
        rate = n_cands / seconds[name]
        if name.startswith("riposte"):
            quality = "{:6.1%} {:6.1%}".format(*agreement(scores[name], reference))
        else:
            quality = "  (bi-encoder cosine only: no ranking to compare)"
        print(f"{name:<46} {rate:8.0f} {rate / torch_rate:7.2f}x {quality}")
    for name, reason in peers.items():
        print(f"{name:<46} {'-':>8}  did not run: {reason}")
    ours = {n: n_cands / seconds[n] for n in runners if n.startswith("riposte") and "," not in n}
    best = max(ours, key=ours.get)
    print(f"\nfastest of ours: {best}, {ours[best]:.0f} cand/s, {ours[best] / torch_rate:.2f}x the editor before "
          f"(target >= 2x), {ours[best] / ours['riposte torch']:.2f}x torch at the new batch size")
    for name in seconds:
        if name.startswith(("sentence", "fastembed")):
            print(f"{best} / {name}: {ours[best] / (n_cands / seconds[name]):.2f}x")
    for source in ("chitchat", "subtitles"):
        idx = [i for i, t in enumerate(turns) if t[0] == source]
        if idx and best != "riposte torch":
            top1, r10 = agreement([scores[best][i] for i in idx], [reference[i] for i in idx])
            print(f"{best} on {source} ({len(idx)} turns): top-1 {top1:.1%}, recall@10 {r10:.1%}")


if __name__ == "__main__":
    main()
