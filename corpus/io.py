"""Model directories on disk: atomic writes (a crash never leaves half a model or shard) and config.json reads."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import fields
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


def config_fields(cls: type, data: dict, what: str, reads: Collection[int]) -> dict:
    """The fields of the config dataclass `cls` in a saved settings section, once its format version is one this
    riposte reads (a ValueError naming `what` otherwise).

    Keys `cls` does not know are dropped, and so is `format_version`: the config comes back at the current
    version, so a directory in an older layout is rewritten in the current one when saved again.
    """
    version = data.get("format_version")
    if version not in reads:
        raise ValueError(f"{what} format_version {version!r} is not supported (this riposte reads "
                         f"{' and '.join(map(str, reads))}; a newer riposte may read it)")
    known = {f.name for f in fields(cls)} - {"format_version"}
    return {k: v for k, v in data.items() if k in known}
