"""Are personas distinguishable? Speaker attribution by per-persona Markov log-likelihood, vs chance.

For each speaker, 20% of their messages are held out; a persona model is built from the rest; each
held-out message goes to the persona whose model scores it highest (mean log-prob per token).

    python benchmarks/persona_eval.py [--input EXPORT...] [--min-messages N]
    python benchmarks/persona_eval.py --synthetic       # a generated 4-speaker export
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from corpus.report import Report
from markov import MarkovConfig
from markov.personas import PersonaConfig, attribution_accuracy, collect, read_chat_inputs

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "discord"


def synthetic_export(path: Path, messages_per_speaker: int = 150, seed: int = 0) -> Path:
    """A DiscordChatExporter file where four speakers share function words but differ in topics and tics."""
    rng = np.random.default_rng(seed)
    styles = {
        "hiker": (["trail", "summit", "boots", "ridge", "camp", "pines"], ["honestly", "no way"], "!"),
        "gamer": (["raid", "boss", "patch", "loot", "ranked", "lag"], ["lol", "bruh"], " lol"),
        "cook": (["garlic", "oven", "dough", "simmer", "basil", "crust"], ["mmm", "ok so"], "."),
        "coder": (["bug", "deploy", "merge", "tests", "branch", "types"], ["tbh", "wait"], "?"),
    }
    glue = ["the", "a", "my", "that", "this", "is", "was", "so", "and", "just", "really", "I", "we", "you"]
    msgs, i = [], 0
    for _ in range(messages_per_speaker):
        for name, (topic, tics, end) in styles.items():
            # tics only sometimes and topic words one time in five: attribution must use the statistics
            words = [rng.choice(tics)] if rng.random() < 0.3 else []
            words += [rng.choice(topic if rng.random() < 0.2 else glue) for _ in range(rng.integers(3, 9))]
            ending = end if rng.random() < 0.5 else rng.choice([".", "!", "?", ""])
            msgs.append({"id": str(i), "type": "Default", "content": " ".join(words) + ending,
                         "author": {"id": name, "name": name, "isBot": False}, "reactions": []})
            i += 1
    path.write_text(json.dumps({"channel": {"id": "7"}, "messages": msgs}), encoding="utf-8")
    return path


def run(inputs: list[str], min_messages: int, order: int, seed: int) -> dict:
    """Read the exports, then measure attribution accuracy."""
    corpus = collect(read_chat_inputs(inputs, Report()), PersonaConfig(min_messages=min_messages))
    return attribution_accuracy(corpus, MarkovConfig(order=order, min_tokens=1), seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", default=[str(SAMPLES)])
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--min-messages", type=int, default=3)
    parser.add_argument("--order", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [str(synthetic_export(Path(tmp) / "synthetic.json"))] if args.synthetic else args.input
        result = run(inputs, args.min_messages, args.order, args.seed)
    print(f"personas {result['personas']}, held-out messages {result['held_out']}")
    print(f"attribution accuracy {result['accuracy']:.3f} vs chance {result['chance']:.3f} "
          f"(majority class {result['majority']:.3f}): {result['accuracy'] / result['chance']:.2f}x chance")
    for p, r in result["per_persona"].items():
        print(f"  {p:20s} {r['correct']}/{r['of']}")


if __name__ == "__main__":
    main()
