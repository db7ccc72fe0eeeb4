"""`python -m server serve|chat`: the HTTP service or a terminal chat over a riposte model dir."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from server.bootstrap import ensure_models, has_reranker
from server.limits import BUDGET_RANGE, budget_in_range


def _prepare(model: Path, build: bool) -> bool:
    """Build missing models unless told not to; True when a reranker is there to score with."""
    ensure_models(model, build=build)
    if not has_reranker(model):
        print(f"riposte: no reranker in {model}: replies are ranked by the Markov prior only", file=sys.stderr)
        return False
    return True


def serve(args: argparse.Namespace) -> int:
    """Run uvicorn over create_app; settings travel by environment so every worker process sees them."""
    import uvicorn

    has_rr = _prepare(args.model, not args.no_build)
    os.environ["RIPOSTE_MODEL_DIR"] = str(args.model)
    os.environ["RIPOSTE_REQUIRE_RERANKER"] = "true" if has_rr else "false"
    if args.budget_ms is not None:
        os.environ["RIPOSTE_BUDGET_MS"] = str(args.budget_ms)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"riposte: listening on {args.host}: reachable from other machines", file=sys.stderr)
    # uvicorn drains in-flight requests on SIGTERM (every request ends by its budget), then re-raises the
    # signal: a handler here turns that into a clean exit 0 rather than death by signal.
    stopped = []
    signal.signal(signal.SIGTERM, lambda sig, frame: stopped.append(sig))
    # Many request threads share the GIL with the event loop and the scoring thread: a shorter switch interval
    # (default 5 ms) lets a finished reply reach the socket sooner, which is what the budget's tail is made of.
    sys.setswitchinterval(float(os.environ.get("RIPOSTE_SWITCH_INTERVAL_S", "0.001")))
    uvicorn.run(
        "server.app:create_app_from_env", factory=True, host=args.host, port=args.port,
        workers=args.workers, log_level=args.log_level,
    )
    if stopped:
        print("riposte: stopped by SIGTERM after finishing the requests in flight", file=sys.stderr)
    return 0


def chat(args: argparse.Namespace) -> int:
    """Load the engine in this process and chat on stdin/stdout."""
    from server.engine import Engine, EngineConfig
    from server.repl import run_repl

    has_rr = _prepare(args.model, not args.no_build)
    config = EngineConfig(budget_ms=args.budget_ms or 1000)
    engine = Engine.load(args.model, config, require_reranker=has_rr)
    try:
        return run_repl(engine, seed=args.seed)
    finally:
        engine.close()


def build_parser() -> argparse.ArgumentParser:
    """The command line: `serve` and `chat`."""
    default_model = Path(os.environ.get("RIPOSTE_MODEL_DIR", "models/default"))
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("serve", "run the HTTP API"), ("chat", "chat in the terminal")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--model", type=Path, default=default_model, help="riposte model dir (markov/ + reranker/)")
        p.add_argument("--budget-ms", type=int, default=None, help="default time budget per reply")
        p.add_argument("--no-build", action="store_true", help="never build missing models; rank by prior without a reranker")
    serve_p = sub.choices["serve"]
    # Loopback unless told otherwise (--host or RIPOSTE_HOST): exposing the service must be a choice.
    serve_p.add_argument("--host", default=os.environ.get("RIPOSTE_HOST", "127.0.0.1"),
                         help="interface to listen on (default: 127.0.0.1, loopback only; 0.0.0.0 exposes it)")
    serve_p.add_argument("--port", type=int, default=8000)
    serve_p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes, each loads its own models")
    serve_p.add_argument("--log-level", default="info")
    sub.choices["chat"].add_argument("--seed", type=int, default=None, help="seed replies for a reproducible chat")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run a subcommand."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.budget_ms is not None and not budget_in_range(args.budget_ms):
        parser.error(f"--budget-ms must be {BUDGET_RANGE}")
    try:
        return serve(args) if args.command == "serve" else chat(args)
    except (FileNotFoundError, ValueError) as exc:  # a wrong --model dir is a usage error, not a crash
        print(f"riposte: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
