"""Replies, end to end: what a user reads, beside the true next line, a random writer line and the zero-shot pick.

For held-out subtitle contexts (../shared/samples, never trained on; 3 lines of context, the true next line known),
or with `--contexts dailydialog` DailyDialog's test split (everyday talk with many questions, as a user chats; no
editor trained on it; the judge below trained on its train split, so there it judges in its own domain), each engine
replies at the default budget (fixed seeds, argmax). Every reply is judged by measures the editors do
not use:

- **judged human**: the share a held-out judge calls a person's line. The judge is a sense model (`reranker/sense`)
  fine-tuned on DailyDialog's train lines against a writer built from them: other data and another writer than
  any editor here trained on. Its held-out length-matched AUC (DailyDialog validation) is printed; it is cached in
  `data/judge/` (gitignored) after the first run.
- **parses**: the share a grammar parser accepts as whole sentences: CMU's Link Grammar (Debian's
  `python3-link-grammar` and `link-grammar-dictionaries-en`, no model of ours), every sentence of the reply
  linked with no word left out ("i" is read as "I", as chat writes it). Strict: elliptical lines such as "Oh, me
  too." fail, so read it beside the true next lines' share. Without the package the column says so;
- **topic**: the zero-shot MiniLM cosine of the reply with the joined context;
- **echo**: the share of the reply's content words found in the last context line;
- **parrots**: the share of replies that repeat a run of 4 words of the last context line (people's rate:
  benchmarks/RESULTS.md, "Fifteenth pass");
- **mirrors**: the share of replies that answer a question (a last line that asks, `corpus.text.asks`: it holds a
  "?", or opens as a question typed without one) with a question taking half or more of its own content words from
  it (`corpus.text.mirrors`);
- **asks back**: among the replies to a question only, the share that ask one too (people's rate: RESULTS,
  "Sixteenth pass");
- **follows**: the share of replies nearer (zero-shot MiniLM cosine) to the last context line than to the lines
  before it, joined: whether the reply takes up what was said last. With `--switch` the last line opens another
  conversation, as a user changes the subject, and a reply that keeps to the old subject does not follow;
- **words**: the reply's length.

Rows: the true next line, a random line of the writer, a random line a person wrote in the default writer's corpus
(chitchat's test split: perfect sense in the writer's own chat style, the parse rate a flawless pick from a chitchat
writer could expect; `--people-lines none` leaves it out), and each engine (with its reply indexes, where the model dir
has them: `riposte index`): the zero-shot bi-encoder as the editor (the
baseline every figure stands beside) and each `--model` dir's own editor, on the same contexts and seeds.

    .venv/bin/python benchmarks/bench_replies.py --model models/default [--model other/dir] [--turns 100]
    .venv/bin/python benchmarks/bench_replies.py --model models/default --reads 80 --around-unbias-above 0 \\
        --around-unbias-above 2 --turns 200   # clock-free: the editor reads exactly 80 a turn, so writers compare
    .venv/bin/python benchmarks/bench_replies.py --model models/default --contexts dailydialog --openings \\
        --context-lines 1 --echo-run 0 --echo-run 4   # a chat's first turn: parroting, with the rule off and on
    .venv/bin/python benchmarks/bench_replies.py --model models/default --contexts dailydialog --switch \\
        --reads 80   # the user changes the subject: does the reply follow it?
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import glob
import itertools
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JUDGE_DIR = ROOT / "data" / "judge"
JUDGE_SECONDS = 240.0
CLOCK_FREE_BUDGET_MS = 600_000  # --reads: long enough that no stage of a turn is ever cut
ZERO_SHOT = "engine, zero-shot bi-encoder editor"  # the row every other engine is paired against
# Words in a run of the last line that a reply "parrots". The measure's own constant, not EngineConfig.echo_run:
# a figure must not move when the engine's setting does.
PARROT_RUN = 4
MIRROR_SHARE = 0.5  # ... and the share of a reply's own content words taken from the question it answers


def on_off(value: str) -> bool:
    """A sweep value of a switch: "on" or "off"."""
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")
    return value == "on"


# EngineConfig fields a run can sweep: (flag, field, type, what it is). Each --model runs once per combination of
# the values given, and its row is named by the changed fields in this order.
SWEEPS = (
    ("--n-candidates", "n_candidates", int, "the candidates a turn writes, of which the first stage orders the reads"),
    ("--order-within-length", "order_within_length", on_off,
     "on or off: the first stage's scores centred within each word count before they order the reads"),
    ("--context-share", "context_share", float, "the share of candidates written around the context's words"),
    ("--context-seed-lines", "context_seed_lines", int,
     "how far back a turn looks for the newest line with words to write around"),
    ("--index-k", "index_k_kept", int, "the hits a turn takes from a reply index that keeps the editor's readings"),
    ("--index-last-line", "index_last_line", float, "more weight on the last line in the reply index's search"),
    ("--around-unbias-above", "around_unbias_above", int,
     "lines written around a word kept with probability min(1, k / tokens); 0: off"),
    ("--echo-run", "echo_run", int, "no parroting: see its comment; 0: off"),
    ("--mirror-share", "mirror_share", float, "no mirrors: see its comment; 0: off"),
    ("--sentence-spans", "sentence_spans", on_off,
     "on or off: a candidate of several sentences also offered as each run of its sentences"),
    ("--max-sentences", "max_sentences", int, "the most sentences a reply may have; 0: any"),
    ("--seed-replies", "seed_replies", str,
     "statements, always or never: when to write around the words people name in reply to the context's words, "
     "not around the context's own"),
)


def held_out_cases(paths: list[str], n: int, seed: int, context_lines: int = 3, openings: bool = False,
                   switch: bool = False) -> list[tuple[list[str], str]]:
    """n (context, true next line) cases from random places in the documents, or from their first lines; `switch`:
    the context's last line opens a document, after context_lines - 1 consecutive lines of another
    (`reranker.windows.switched`, as the mix's validation cases change the subject), and the true next line is the
    opened document's second."""
    from reranker.__main__ import read_split
    from reranker.windows import switched

    docs = [d for d in read_split(paths, "all")[0] if len(d.lines) > context_lines]
    rng = np.random.default_rng(seed)
    if switch:
        if len(docs) < 2:
            raise SystemExit(f"--switch: cases need two documents of more than {context_lines} lines, found {len(docs)}")
        out = []
        while len(out) < n:
            d = int(rng.integers(len(docs)))
            opening = [line.text for line in docs[d].lines[:2]]
            context = switched([""] * (context_lines - 1) + opening[:1], docs, d, rng)
            if "" not in context:  # no placeholder left: switched found another document in its draws (it may not)
                out.append((context, opening[1]))
        return out
    if openings:  # one case a document, so no document twice
        if n > len(docs):
            raise SystemExit(f"--openings: {n} turns asked, but only {len(docs)} documents have more than "
                             f"{context_lines} lines")
        return [([line.text for line in docs[d].lines[:context_lines]], docs[d].lines[context_lines].text)
                for d in rng.permutation(len(docs))[:n]]
    out = []
    while len(out) < n:
        doc = docs[int(rng.integers(len(docs)))]
        i = int(rng.integers(context_lines, len(doc.lines)))
        out.append(([line.text for line in doc.lines[i - context_lines : i]], doc.lines[i].text))
    return out


def people_lines(n: int, seed: int) -> list[str]:
    """n random lines people wrote in chitchat's test split, cleaned as the served writer's table holds them (held
    out from every editor recipe; the writer never says a corpus line verbatim)."""
    from corpus.chitchat import cleaned_chitchat
    from reranker.windows import split_of

    lines = [line.text for doc in cleaned_chitchat() if split_of(doc.source_id) == "test" for line in doc.lines]
    return [lines[i] for i in np.random.default_rng([4, seed]).choice(len(lines), size=n, replace=False)]


def judge(dailydialog: Path):
    """The held-out judge: a sense model trained on DailyDialog against its own writer (cached)."""
    from corpus.dump import read_path
    from corpus.report import Report
    from markov import MarkovModel
    from reranker.evaluate import writer_lines
    from reranker.sense import SenseModel, held_out_auc, length_matched_pairs, train_sense

    def lines(name: str) -> list[str]:
        return [line.text for doc in read_path(dailydialog / name, Report()) for line in doc.lines]

    train, val = lines("train.txt"), lines("validation.txt")
    writer = MarkovModel.build((t, 1.0) for t in train)
    held = length_matched_pairs(val, writer_lines(writer, 8000, seed=11), seed=1)[:1000]
    if (JUDGE_DIR / "sense_head.safetensors").is_file():
        model = SenseModel.load(JUDGE_DIR, backend="torch")
    else:
        model = SenseModel.from_backbone()
        pairs = length_matched_pairs(train, writer_lines(writer, 80_000, seed=10), seed=0)
        report = train_sense(model, pairs, held, deadline=time.monotonic() + JUDGE_SECONDS)
        print(f"judge trained: {report['lines']:,} lines in {report['seconds']:.0f} s", flush=True)
        JUDGE_DIR.mkdir(parents=True, exist_ok=True)
        model.write(JUDGE_DIR)
    print(f"judge: held-out length-matched AUC on DailyDialog validation {held_out_auc(model, held):.3f} "
          f"({len(held)} pairs)", flush=True)
    return model


def grammar_parser():
    """A function text -> 1.0 if Link Grammar links every sentence of it with no word left out, else 0.0; None
    (with a note printed) where the Debian package is not installed."""
    try:
        import linkgrammar  # noqa: F401
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")  # where Debian's python3-link-grammar puts it
        try:
            import linkgrammar  # noqa: F401
        except ImportError:
            print("grammar parser: not installed (apt install python3-link-grammar link-grammar-dictionaries-en)")
            return None
        finally:
            sys.path.remove("/usr/lib/python3/dist-packages")
    import re

    from linkgrammar import Clinkgrammar, Dictionary, ParseOptions, Sentence

    dictionary = Dictionary("en")
    options = ParseOptions(min_null_count=0, max_null_count=0, max_parse_time=2, verbosity=0)

    def parses(text: str) -> float:
        text = re.sub(r"\bi(?=\b|')", "I", text.strip())
        pieces = [p for p in re.split(r"(?<=[.!?])\s+", text) if p]
        if not pieces:  # no reply (a turn none of whose candidates passed): nothing parses, and Link Grammar
            return 0.0  # aborts the process on an empty sentence
        for piece in pieces:
            sentence = Sentence(piece, dictionary, options)
            sentence.parse()
            if Clinkgrammar.sentence_num_valid_linkages(sentence._obj) == 0:
                return 0.0
        return 1.0

    return parses


def mean_se(x) -> tuple[float, float]:
    """The mean of x and its standard error, over the values that are not None (NaN for none)."""
    from reranker.evaluate import standard_error

    x = [v for v in x if v is not None]
    return (float(np.mean(x)), standard_error(x)) if x else (float("nan"), float("nan"))


def context_sides(cases: list[tuple[list[str], str]], topic_model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors of each case's joined context, its last line and the lines before it, joined: the same for every
    row, so a run embeds them once."""
    from reranker.runtime import unit

    joined = unit(topic_model.embed([" ".join(c) for c, _ in cases], keep_end=True)[0])
    lasts = unit(topic_model.embed([c[-1] for c, _ in cases])[0])
    befores = unit(topic_model.embed([" ".join(c[:-1]) or "-" for c, _ in cases], keep_end=True)[0])
    return joined, lasts, befores


def measures(texts: list[str], cases: list[tuple[list[str], str]], judge_model, topic_model, parses=None,
             sides: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict:
    """Per-row means (and standard errors) of the judged-human share, the parsed share, topic, echo, parrots,
    mirrors, asks back, follows and words, and each reply's own values under "per_reply" (parses None without the
    grammar parser; asks back None after a line that asks nothing, follows None after a context of one line).
    `sides`: the cases' `context_sides`, embedded here when not given."""
    from corpus.text import also_spelled, asks, holds_run, mirrors, overlap, word_runs, words
    from reranker.runtime import unit

    human = (judge_model.logits(texts) > 0).astype(float)
    contexts, lasts, befores = sides or context_sides(cases, topic_model)
    replies = unit(topic_model.embed(texts)[0])
    topic = (contexts * replies).sum(1)
    # nearer the last line than the lines before it (None for a context of one line: nothing to compare)
    follows = [float(a > b) if len(c) > 1 else None for a, b, (c, _) in
               zip((lasts * replies).sum(1), (befores * replies).sum(1), cases, strict=True)]
    echo, parrots, mirrored, asks_back = [], [], [], []
    for text, (context, _) in zip(texts, cases, strict=True):
        said, last, question = words(text), words(context[-1]), asks(context[-1])
        echo.append(overlap(said, frozenset(last)))
        parrots.append(float(holds_run(said, word_runs(last, PARROT_RUN))))
        mirrored.append(float(mirrors(text, said, also_spelled(last) if question else None, MIRROR_SHARE)))  # as served
        asks_back.append(float(asks(text)) if question else None)  # None: no question to answer
    per_reply = {"human": human.tolist(), "parses": [parses(t) for t in texts] if parses else None,
                 "topic": topic.tolist(), "echo": echo, "parrots": parrots, "mirrors": mirrored,
                 "asks_back": asks_back, "follows": follows, "words": [len(words(t)) for t in texts]}
    return {**{k: None if v is None else mean_se(v) for k, v in per_reply.items()}, "per_reply": per_reply}


def paired(ours: list[float], theirs: list[float]) -> str:
    """Mean difference of two rows on the same contexts, with its standard error (same-context noise cancels); "—"
    where no context has both."""
    kept = [(a, b) for a, b in zip(ours, theirs, strict=True) if a is not None and b is not None]
    if not kept:  # a measure with nothing to say of any context (follows, after one line of context)
        return "—"
    mean, se = mean_se([a - b for a, b in kept])
    return f"{mean:+.3f} ± {se:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", type=Path, default=[], help="model dir (markov/ + editor/)")
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7, help="which held-out contexts (the same seed, the same ones)")
    parser.add_argument("--budget-ms", type=int, default=1000)
    parser.add_argument("--samples", default=str(ROOT.parent / "shared" / "samples"))
    parser.add_argument("--contexts", choices=("subtitles", "dailydialog"), default="subtitles",
                        help="held-out subtitles (--samples: SubRip and OPUS XML), or DailyDialog's test split "
                             "(--dailydialog: everyday talk, many questions)")
    parser.add_argument("--dailydialog", type=Path, default=ROOT.parent / "shared" / "data" / "dailydialog")
    parser.add_argument("--examples", type=int, default=8, help="sample replies to print")
    for flag, field, kind, what in SWEEPS:
        parser.add_argument(flag, dest=field, type=kind, action="append", default=[],
                            help=f"run each --model once per value of EngineConfig.{field} ({what}); default: the "
                                 "engine's own setting")
    parser.add_argument("--context-lines", type=int, default=3, help="lines of context a case gives the engine")
    parser.add_argument("--openings", action="store_true",
                        help="cases from the documents' first lines (one a document): a conversation's first "
                             "turns, as a user starts one")
    parser.add_argument("--switch", action="store_true",
                        help="cases whose last line opens another document (the subject changes; the true next "
                             "line is that document's second): does the reply follow the new subject?")
    parser.add_argument("--people-lines", choices=("chitchat", "none"), default="chitchat",
                        help="a row of random lines people wrote in the default writer's corpus (chitchat's test "
                        "split), or none")
    parser.add_argument("--clients", type=int, default=1, help="turns in flight at once (`areply` on one event loop, "
                        "the CPU stages on an executor of max(2, cores) threads: as the HTTP server runs them)")
    parser.add_argument("--reads", type=int, default=None, metavar="N",
                        help="clock-free: each turn's editor reads exactly its first N candidates in read order (no "
                             "budget), argmax. A turn's reads otherwise follow the clock, so one engine moves about "
                             "+-0.035 between runs; use this to compare writers or mixes")
    parser.add_argument("--save", type=Path, help="write every reply and its judgements to this JSON file")
    args = parser.parse_args()
    if args.context_lines < 1:
        parser.error("--context-lines needs N >= 1")
    if args.switch and (args.openings or args.context_lines < 2):
        parser.error("--switch needs --context-lines >= 2 (lines before the new subject) and no --openings")
    if args.reads is not None and (args.reads < 1 or args.clients != 1):
        parser.error("--reads needs N >= 1 and one client (it reads with no clock, so there is no load to share)")
    if args.save:  # a path that cannot be written fails now, not after every engine has run
        with open(args.save, "a", encoding="utf-8"):
            pass
    models = args.model or [ROOT / "models" / "default"]

    from reranker.biencoder import BiEncoder
    from reranker.editor import Editor
    from server.models import load_engine

    if args.contexts == "dailydialog":
        paths = [str(args.dailydialog / "test.txt")]
    else:
        paths = sorted(glob.glob(f"{args.samples}/srt/*")) + sorted(glob.glob(f"{args.samples}/opus_xml/*"))
    cases = held_out_cases(paths, args.turns, seed=args.seed, context_lines=args.context_lines,
                           openings=args.openings, switch=args.switch)
    kind = ", openings" if args.openings else ", the subject changed at the last line" if args.switch else ""
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; {len(cases)} held-out {args.contexts} "
          f"contexts of {args.context_lines} line(s){kind}, budget "
          f"{args.budget_ms} ms, {args.clients} client(s)", flush=True)
    judge_model = judge(args.dailydialog)
    parses = grammar_parser()
    topic_model = BiEncoder.from_backbone()
    rows: dict[str, list[str]] = {"true next line": [true for _, true in cases]}
    first = load_engine(models[0])
    rng = np.random.default_rng([3, args.seed])  # fresh random lines for fresh contexts
    rows["random writer line"] = [first.personas["default"].generate(64, rng).candidates[0] for _ in cases]
    if args.people_lines == "chitchat":
        rows["a person's chat line (chitchat test split)"] = people_lines(len(cases), args.seed)
    zero_shot = type(first)(first.personas, Editor.from_backbone(), first.config, first_stage=first.first_stage)
    engines = {ZERO_SHOT: zero_shot}
    for i, m in enumerate(models):
        engine = first if i == 0 else load_engine(m)
        fields = [field for _, field, _, _ in SWEEPS]
        for values in itertools.product(*(getattr(args, field) or [None] for field in fields)):
            changes = {field: v for field, v in zip(fields, values, strict=True) if v is not None}
            engines[", ".join([f"engine, {m}", *(f"{name} {v}" for name, v in changes.items())])] = type(engine)(
                engine.personas, engine.editor, dataclasses.replace(engine.config, **changes),
                first_stage=engine.first_stage, indexes=engine.indexes) if changes else engine
    for name, engine in engines.items():
        started = time.perf_counter()

        async def turns(engine=engine) -> list[tuple[str, int, bool]]:
            # As the HTTP server runs turns: `areply` on the event loop, the CPU stages on an executor of
            # max(2, cores) threads, `clients` turns in flight.
            gate = asyncio.Semaphore(args.clients)
            with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:

                async def turn(t: int) -> tuple[str, int, bool]:
                    async with gate:
                        reply = await engine.areply(cases[t][0], executor=pool, budget_ms=args.budget_ms, seed=1000 + t)
                    return reply.reply or "", int(reply.stats.get("scored", 0)), reply.stats.get("source") == "index"

                return await asyncio.gather(*(turn(t) for t in range(len(cases))))

        def clock_free(engine=engine) -> list[tuple[str, int, bool]]:
            out = []
            for t, (context, _) in enumerate(cases):
                # a budget no turn meets, so no stage is cut by the clock either
                candidates = engine.prepare(engine.plan(context, seed=1000 + t, budget_ms=CLOCK_FREE_BUDGET_MS))
                texts = list(candidates.texts[: args.reads])
                best = int(np.argmax(engine.editor.score(context, texts))) if texts else 0
                out.append((texts[best] if texts else "", len(texts), bool(len(texts) and candidates.sources()[best])))
            return out

        results = clock_free() if args.reads else asyncio.run(turns())
        rows[name] = [text for text, _, _ in results]
        read = [n for _, n, _ in results]
        empty = sum(not text for text, _, _ in results)
        none = f"; no reply (no candidate passed the filters) in {empty}" if empty else ""
        from_index = f"; replies from the reply index: {np.mean([i for _, _, i in results]):.2f}" if engine.indexes else ""
        print(f"{name}: {len(results)} replies in {time.perf_counter() - started:.0f} s, {args.clients} at a time; "
              f"editor read per reply: median {np.median(read):.0f}, mean {np.mean(read):.0f}{from_index}{none}", flush=True)
    keys = ("human", "parses", "topic", "echo", "parrots", "mirrors", "asks_back", "follows", "words")
    print("\n| reply | judged human | parses (Link Grammar) | topic | echo | parrots | mirrors | asks back | follows "
          "| words |\n|---|---|---|---|---|---|---|---|---|---|")
    judged, sides = {}, context_sides(cases, topic_model)
    for name, texts in rows.items():
        m = judged[name] = measures(texts, cases, judge_model, topic_model, parses, sides)
        print(f"| {name} | " + " | ".join("not installed" if m[k] is None else "—" if np.isnan(m[k][0])
                                          else f"{m[k][0]:.1f}" if k == "words"
                                          else f"{m[k][0]:.3f} ± {m[k][1]:.3f}" for k in keys) + " |")
    # Every engine against the zero-shot editor on the same contexts: the paired difference is what a change moved.
    base = judged[ZERO_SHOT]["per_reply"]
    print("\nPaired against the zero-shot editor (the same contexts; difference ± its standard error):\n")
    print("| reply | judged human | parses | topic | echo | parrots | mirrors | asks back | follows | words |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for name in list(engines)[1:]:
        ours = judged[name]["per_reply"]
        print(f"| {name} | " + " | ".join("not installed" if ours[k] is None else paired(ours[k], base[k])
                                          for k in keys) + " |")
    if args.save:  # every reply and its judgements, to compare runs or cut by length later
        args.save.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "cases": [{"context": c, "true": t} for c, t in cases],
                                         "rows": {name: {"replies": texts, **judged[name]["per_reply"]}
                                                  for name, texts in rows.items()}}, indent=1))
        print(f"\nsaved every reply and its judgements in {args.save}")
    print("\nSample replies:")
    for t in range(min(args.examples, len(cases))):
        print(f"\ncontext: {' / '.join(cases[t][0])}")
        for name, texts in rows.items():
            print(f"  {name}: {texts[t]}")
    for engine in engines.values():
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
