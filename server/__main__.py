"""`python -m server serve|chat|index`: the HTTP service, a terminal chat, or a persona's reply index.

Both read one `Settings` (server/settings.py): a flag given here wins over its RIPOSTE_* environment variable,
which wins over the default. `serve` opens its port at once and builds missing models behind it (`/health` shows
the progress); `chat` builds them first, with progress bars, then chats.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from corpus.progress import quiet_library_bars
from server.engine import SEED_REPLIES
from server.settings import LogLevel, Settings, configure_logging

log = logging.getLogger("server")

# Flags whose values are Settings fields; each default lives in Settings alone (None here means "not given").
FLAG_FIELDS = ("model_dir", "budget_ms", "echo_run", "mirror_share", "seed_replies", "order_within_length",
               "max_sentences", "build", "blocklist_file", "blocklist_words", "blocklist_regexes", "log_level", "host",
               "port", "workers", "cors_origins")


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the flags given, then the environment (or .env); the command line builds by default."""
    given: dict[str, Any] = {k: v for k in FLAG_FIELDS if (v := getattr(args, k, None)) is not None}
    configured = Settings().model_fields_set  # what the environment or a .env file set
    if "build" not in configured:
        given.setdefault("build", True)
    # From the command line a missing reranker is served by the prior, with a warning, unless the environment asks
    # for one (RIPOSTE_REQUIRE_RERANKER=true).
    if "require_reranker" not in configured:
        given["require_reranker"] = False
    return Settings(**given)


def serve(settings: Settings) -> int:
    """Run uvicorn over create_app; settings travel by environment so every worker process sees them."""
    import uvicorn

    from server.metrics import prepare_multiprocess_dir

    os.environ.update(settings.to_env())
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: reachable from other machines%s", settings.host,
                    "" if settings.api_key else " (and no RIPOSTE_API_KEY is set)")
    metrics_dir = prepare_multiprocess_dir(settings.workers)
    # uvicorn drains in-flight requests on SIGTERM (every request ends by its budget), then re-raises the
    # signal: a handler here turns that into a clean exit 0 rather than death by signal.
    stopped = []
    signal.signal(signal.SIGTERM, lambda sig, frame: stopped.append(sig))
    # Many request threads share the GIL with the event loop and the scoring thread: a shorter switch interval
    # (default 5 ms) lets a finished reply reach the socket sooner, which is what the budget's tail is made of.
    sys.setswitchinterval(float(os.environ.get("RIPOSTE_SWITCH_INTERVAL_S", "0.001")))
    try:
        uvicorn.run(
            "server.app:create_app_from_env", factory=True, host=settings.host, port=settings.port,
            workers=settings.workers, log_level=settings.log_level,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if stopped:
        log.warning("stopped by SIGTERM after finishing the requests in flight")
    return 0


def chat(settings: Settings, seed: int | None) -> int:
    """Build what is missing, load the engine in this process and chat on stdin/stdout."""
    from server.models import ensure_models, load_engine
    from server.repl import run_repl

    config = settings.engine_config()  # once: it reads the blocklist file
    ensure_models(settings.model_dir, build=settings.build, rules=config)
    engine = load_engine(settings.model_dir, config, require_reranker=settings.require_reranker)
    if engine.editor is None:
        log.warning("no reranker or editor in %s: replies are ranked by the first stage or the prior", settings.model_dir)
    try:
        return run_repl(engine, seed=seed, budget_ms=settings.budget_ms)
    finally:
        engine.close()


def build_parser(prog: str = "python -m server") -> argparse.ArgumentParser:
    """The command line: `serve` and `chat`; every default comes from Settings."""
    defaults = Settings.model_fields
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("serve", "run the HTTP API (and the web page at /)"), ("chat", "chat in the terminal")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--model", dest="model_dir", type=Path,
                       help=f"riposte model dir, markov/ + editor/ (RIPOSTE_MODEL_DIR; default {defaults['model_dir'].default})")
        p.add_argument("--budget-ms", type=int,
                       help=f"time budget per reply (RIPOSTE_BUDGET_MS; default {defaults['budget_ms'].default})")
        p.add_argument("--echo-run", type=int,
                       help=f"{defaults['echo_run'].description} (RIPOSTE_ECHO_RUN; default "
                            f"{defaults['echo_run'].default})")
        p.add_argument("--mirror-share", type=float,
                       help=f"{defaults['mirror_share'].description} (RIPOSTE_MIRROR_SHARE; default "
                            f"{defaults['mirror_share'].default})")
        p.add_argument("--seed-replies", choices=SEED_REPLIES,
                       help=f"{defaults['seed_replies'].description} (RIPOSTE_SEED_REPLIES; default "
                            f"{defaults['seed_replies'].default})")
        p.add_argument("--order-within-length", action=argparse.BooleanOptionalAction,
                       help=f"{defaults['order_within_length'].description} (RIPOSTE_ORDER_WITHIN_LENGTH; default "
                            f"{'on' if defaults['order_within_length'].default else 'off'})")
        p.add_argument("--max-sentences", type=int,
                       help=f"{defaults['max_sentences'].description} (RIPOSTE_MAX_SENTENCES; default "
                            f"{defaults['max_sentences'].default})")
        p.add_argument("--no-build", dest="build", action="store_const", const=False,
                       help="never build missing models; without a reranker, rank replies by the prior")
        p.add_argument("--blocklist-file", type=Path,
                       help="replies never contain a word of this file (one per line; 're:' starts a regex)")
        p.add_argument("--blocklist-word", dest="blocklist_words", action="append", metavar="WORD",
                       help="replies never contain this word (repeatable; RIPOSTE_BLOCKLIST_WORDS=a,b)")
        p.add_argument("--blocklist-regex", dest="blocklist_regexes", action="append", metavar="REGEX",
                       help="replies never match this regex (repeatable)")
        p.add_argument("--log-level", type=lambda v: {"warn": "warning"}.get(v.lower(), v.lower()),
                       choices=LogLevel.__args__,
                       help=f"riposte's and uvicorn's log level (RIPOSTE_LOG_LEVEL; default {defaults['log_level'].default})")
    serve_p = sub.choices["serve"]
    # Loopback unless told otherwise (--host or RIPOSTE_HOST): exposing the service must be a choice.
    serve_p.add_argument("--host", help="interface to listen on (RIPOSTE_HOST; default 127.0.0.1, loopback only; "
                                        "0.0.0.0 exposes it)")
    serve_p.add_argument("--port", type=int, help=f"port (RIPOSTE_PORT; default {defaults['port'].default})")
    serve_p.add_argument("--workers", type=int, help="uvicorn worker processes, each loads its own models "
                                                     f"(RIPOSTE_WORKERS; default {defaults['workers'].default})")
    serve_p.add_argument("--cors-origin", dest="cors_origins", action="append", metavar="ORIGIN",
                         help="a web origin allowed to call the API from a browser (repeatable; RIPOSTE_CORS_ORIGINS)")
    sub.choices["chat"].add_argument("--seed", type=int, default=None, help="seed replies for a reproducible chat")
    p = sub.add_parser("index", help="build or grow a persona's reply index (model_dir/index/PERSONA)",
                       description="Write a persona's lines in bulk, judge them once with the editor's sense model (keeping "
                       "the editor's reading of each, so a turn scores them with no forward pass), "
                       "embed them with the first stage and store them in an HNSW index that every turn searches "
                       "(see reranker/index.py). Written atomically: a killed build leaves the previous index.")
    p.add_argument("--model", dest="model_dir", type=Path, help="riposte model dir (RIPOSTE_MODEL_DIR)")
    p.add_argument("--persona", default="default", help="whose writer (default: default)")
    p.add_argument("--entries", type=int, default=100_000, help="lines to write and judge (default 100,000)")
    p.add_argument("--add", action="store_true", help="grow the index there by --entries instead of rebuilding it")
    p.add_argument("--max-minutes", type=float, default=None, help="stop writing at this time, keeping what is done")
    p.add_argument("--drop-share", type=float, default=None,
                   help="share of lines the judge drops as broken (default 0.1; fixed at the first build)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-level", type=lambda v: v.lower(), choices=LogLevel.__args__, default=None)
    return parser


def index(args: argparse.Namespace, settings: Settings) -> int:
    """Build or grow a persona's reply index and print its report."""
    import json

    from server.models import build_index

    if args.entries < 1:
        raise ValueError(f"--entries must be >= 1, got {args.entries}")
    report = build_index(settings.model_dir, args.persona, args.entries, add=args.add, max_minutes=args.max_minutes,
                         drop_share=args.drop_share, seed=args.seed, progress=True,
                         rules=settings.engine_config())
    print(json.dumps(report))
    return 0


def explain(error: ValidationError) -> str:
    """A settings error as one line per bad field."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in error.errors())


def main(argv: list[str] | None = None, prog: str = "python -m server") -> int:
    """Parse the command line and run a subcommand; `prog` names the command in usage lines."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        parser.error(explain(exc))
    configure_logging(settings.log_level)
    quiet_library_bars()  # off a terminal, transformers' own bars would be frames in the log
    try:
        if args.command == "index":
            try:
                return index(args, settings)
            except KeyboardInterrupt:
                print("riposte: interrupted; the index as it was before this build is unchanged", file=sys.stderr)
                return 130
        return serve(settings) if args.command == "serve" else chat(settings, args.seed)
    except (OSError, ValueError, RuntimeError) as exc:  # a wrong or unwritable --model dir: a usage error, not a crash
        print(f"riposte: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
