"""How an editor's quality grows with its build budget: held-out R@1 against minutes, and a PNG.

Each budget builds the editor from scratch with `train_default` (prep, the sense model's fine-tune, embedding,
fluency head, mix and the evaluation all inside the budget; the sense model's held-out AUC is printed too) and
reads back the figures it measured on the held-out chitchat conversations, the zero-shot bi-encoder beside it on
the same cases. With --dump PATH... (and --hold-out patterns) it builds the dialogue editor of
`train --dump ... --recipe editor` instead, from a dump read once before the first budget (the reading time is
printed, not counted in the budget), and its own held-out figures are the held-out documents'. With --ood
PATH..., each editor is also evaluated on dialogue it never saw (every document held out, writers built from the
other documents).

    .venv/bin/python benchmarks/editor_curve.py --minutes 2.5 5 10 20 [--ood ../shared/samples/srt ...]
    .venv/bin/python benchmarks/editor_curve.py --dump ../shared/data --hold-out 's09e*.txt' 's10e*.txt' test.txt \
        --minutes 2 5 10 30 60 --ood ../shared/samples/srt ../shared/samples/opus_xml --out benchmarks/dialogue_curve

With --append the new points join the ones already in OUT.json (a point of the same budget is replaced), so a
long budget can be run in a later session; each row names the day and the CPU it ran on, and only rows of one
machine kind belong on one curve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reranker import Reranker  # noqa: E402
from reranker.__main__ import evaluate_on, read_split  # noqa: E402
from reranker.recipes import DefaultRecipe, train_default, train_editor  # noqa: E402

MEASURES = (("select100", "R@1 of 100"), ("writer99", "R@1 vs 99 writer lines"), ("select10", "R@1 of 10"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.5, 5, 10, 20])
    parser.add_argument("--ood", nargs="*", default=[], help="held-out dialogue paths (SRT, OPUS XML folders or files)")
    parser.add_argument("--out", default="benchmarks/editor_curve", help="prefix of the .json and .png written")
    parser.add_argument("--append", action="store_true", help="keep OUT.json's other points (see above)")
    parser.add_argument("--dump", nargs="*", default=[], help="build the dialogue editor from this dump, not chitchat")
    parser.add_argument("--hold-out", nargs="*", default=[], help="with --dump: file patterns held out as the test split")
    parser.add_argument("--keep", help="save the editor of the longest budget here (it is deleted otherwise)")
    args = parser.parse_args()

    earlier = json.loads(Path(args.out + ".json").read_text()) if args.append and Path(args.out + ".json").is_file() \
        else []
    earlier = [r for r in earlier if r["minutes"] not in args.minutes]
    if any(r.get("machine", machine()) != machine() for r in earlier):
        print(f"warning: {args.out}.json holds points of another machine than this one ({machine()}); a curve "
              "compares one machine kind's points only", file=sys.stderr)
    own = "own" if args.dump else "chitchat"  # the key of the editor's own held-out figures in a row
    splits = None
    if args.dump:
        started = time.monotonic()
        splits = {name: read_split(args.dump, name, hold_out=tuple(args.hold_out))[0]
                  for name in ("train", "val", "test")}
        print(f"read {' '.join(args.dump)} in {time.monotonic() - started:.0f} s: "
              + ", ".join(f"{name} {len(docs):,} documents" for name, docs in splits.items()), flush=True)
    rows = []
    for minutes in args.minutes:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            recipe = DefaultRecipe.preset("large" if minutes >= 30 else "default", max_minutes=minutes)
            keep = args.keep and minutes == max(args.minutes)
            out = Path(args.keep) if keep else Path(tmp) / "editor"
            if splits is None:
                train_default(out, recipe=recipe, progress=False)
            else:
                train_editor(splits, out, recipe=recipe, data_name=" ".join(args.dump), progress=False)
            row = {"minutes": minutes, "wall_s": round(time.monotonic() - started, 1), "machine": machine(),
                   "date": time.strftime("%Y-%m-%d"), "data": " ".join(args.dump) or "chitchat",
                   "train": json.loads((out / "train.json").read_text()),
                   own: json.loads((out / "eval.json").read_text())["scorers"]}
            if args.ood:
                docs, _ = read_split(args.ood, "all")
                row["ood"] = evaluate_on(Reranker.load(out), args.ood, docs, split="all", baseline=True, writer=None,
                                         seed=0, progress=False)["scorers"]
        for scorers in (row[own], row.get("ood", {})):
            for figures in scorers.values():
                for m in figures.values():
                    if isinstance(m, dict):
                        m.pop("ranks", None)
                        m.pop("wins", None)
        rows.append(row)
        # written after each budget, so a session cut short keeps the points it finished
        Path(args.out + ".json").write_text(json.dumps(sorted(earlier + rows, key=lambda r: r["minutes"]), indent=1),
                                            encoding="utf-8")
        m, b = row[own]["model"], row[own]["bi-encoder"]
        sense = row["train"].get("sense", {})
        print(f"{minutes:5.1f} min ({row['wall_s']:.0f} s wall): sense {sense.get('lines', 0):,} lines, held-out AUC "
              f"{sense.get('held_out_auc', float('nan')):.3f}; fluency lines {row['train']['fluency'].get('n_train', 0):,}; "
              + "; ".join(f"{label} {m[k]['r@1']:.3f} (bi-encoder {b[k]['r@1']:.3f}, n {m[k]['n']})"
                          for k, label in MEASURES if k in m),
              flush=True)
    rows = sorted(earlier + rows, key=lambda r: r["minutes"])
    plot(rows, args.out + ".png")
    print(f"wrote {args.out}.json and {args.out}.png")


def machine() -> str:
    """The CPU's model name, its cores and whether it has AMX: the curve's figures hold for that machine kind."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "cpu")
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    extra = "AMX" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "no bf16"
    return f"{name}, {os.cpu_count()} cores, {extra}"


def plot(rows: list[dict], path: str) -> None:
    """Held-out R@1 against build minutes, one panel per data set, the bi-encoder dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the unseen-subtitles panel only where every point has it (--append may join runs with and without --ood)
    own = ("own", "its own held-out documents") if "own" in rows[0] else ("chitchat", "held-out chitchat")
    sets = [own] + ([("ood", "unseen subtitles")] if all("ood" in r for r in rows) else [])
    sense = [r for r in rows if r["train"].get("sense", {}).get("held_out_auc") is not None]
    fig, axes = plt.subplots(1, len(sets) + bool(sense), figsize=(6 * (len(sets) + bool(sense)), 4), squeeze=False)
    minutes = [r["minutes"] for r in rows]
    for ax, (key, title) in zip(axes[0], sets, strict=False):  # the sense panel, last, is drawn below
        for (measure, label), color in zip(MEASURES, ("C0", "C1", "C2"), strict=True):
            if measure not in rows[0][key]["model"]:
                continue
            ax.errorbar(minutes, [r[key]["model"][measure]["r@1"] for r in rows],
                        yerr=[r[key]["model"][measure]["r@1_se"] for r in rows], color=color, marker="o",
                        capsize=3, label=f"editor: {label}")
            ax.plot(minutes, [r[key]["bi-encoder"][measure]["r@1"] for r in rows], color=color, ls="--",
                    label=f"zero-shot bi-encoder: {label}")
        ax.set_ylabel("R@1")
        ax.set_title(title)
    if sense:  # the sense model ("human or writer?"), held-out length-matched AUC against each kind of writer line
        ax = axes[0][-1]
        for key, label, color in (("held_out_auc", "plain writer lines", "C3"),
                                  ("held_out_auc_seeded", "lines begun at a topic word", "C4"),
                                  ("held_out_auc_around", "lines written around context words", "C5")):
            points = [(r["minutes"], r["train"]["sense"][key]) for r in sense if key in r["train"]["sense"]]
            if points:
                ax.plot(*zip(*points, strict=True), color=color, marker="o", label=f"against {label}")
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set_ylabel("held-out length-matched AUC")
        ax.set_title("the sense model")
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.minorticks_off()  # the log axis' minor labels ("3 x 10^0") crowd the budgets' own
        ax.set_xticks(minutes, [f"{m:g}" for m in minutes])
        ax.set_xlabel("build budget (minutes, 2-core CPU)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
