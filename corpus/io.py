"""Model directories on disk: atomic writes (a crash never leaves half a model or shard) and config.json reads."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `target` by rename, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        for path in tmp.rglob("*"):  # durable before it becomes visible
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_config(directory: str | os.PathLike, what: str) -> dict:
    """The parsed config.json of a saved `what` ("reranker", "editor", ...); a clear error if missing or corrupt."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a {what} directory (no config.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is corrupt ({exc}); rebuild or restore the {what}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} is corrupt (not a JSON object); rebuild or restore the {what}")
    return data
