"""Model directories on disk: one config.json layout for every kind, atomic writes, and the known-field filter.

Every saved riposte model is a directory whose config.json holds our settings under one key, "riposte", with the
model's `kind` ("markov", "cross-encoder", "biencoder", "editor", "first_stage") and its `format_version`:

    {"riposte": {"kind": "editor", "format_version": 1, ...the kind's settings...}, ...}

Beside that section the file may hold another library's keys: a Hugging Face model's own config (the cross-encoder
and the bi-encoder are `save_pretrained` directories), or a `model_type` that other loaders refuse with a message.
Directories written before this layout still read: a Markov model kept its settings at the top level (kind
"riposte.markov", format version 2), and a cross-encoder's section had no kind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path


def write_file_atomically(path: str | os.PathLike, text: str, *, private: bool = False) -> None:
    """Write a text file whole or not at all: a temporary sibling, synced, then renamed over `path`.

    The file gets the mode any new file gets (the umask's), or, `private`, its owner's alone (0600)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)  # the previous directory goes back: never neither
                raise
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


# A model dir as riposte serves it (server.models): the writers, the editor, and the first stage when there is one.
MARKOV_DIR = "markov"  # one Markov writer, or a folder of persona writers with personas.json (markov.personas)
EDITOR_DIR = "editor"
LEGACY_EDITOR_DIR = "reranker"  # where model dirs made before December 2026 keep their editor; still read
FIRST_STAGE_DIR = "first_stage"  # inside the editor's directory (or beside it)
INDEX_DIR = "index"  # the reply indexes: model_dir/index/<persona>/ (reranker.index)
DEFAULT_PERSONA = "default"  # the writer of a model dir with one writer, and the persona a request gets by default

SECTION = "riposte"  # our settings inside config.json, beside any other library's keys
CONFIG_FILE = "config.json"
LEGACY_MARKOV_KIND = "riposte.markov"  # Markov format 2 kept kind, format_version and settings at the top level


def editor_dir(model_dir: str | os.PathLike) -> Path:
    """Where a model dir keeps its editor: `editor/`, or `reranker/` in a dir made before the rename."""
    model_dir = Path(model_dir)
    current, legacy = model_dir / EDITOR_DIR, model_dir / LEGACY_EDITOR_DIR
    # A saved editor has its config.json; an empty or half-made editor/ must not hide a working reranker/.
    if (legacy / CONFIG_FILE).is_file() and not (current / CONFIG_FILE).is_file():
        return legacy
    if legacy.is_dir() and not current.is_dir():
        return legacy
    return current


def read(directory: str | os.PathLike, what: str = "model", kind: str | None = None, hint: str = "") -> dict:
    """The riposte section of a saved model's config.json (with its `kind` and `format_version`), read once.

    `what` names the directory in errors, and `hint` (e.g. "rebuild it with ...") ends them; with `kind`, a
    directory of another kind is refused.
    """
    raw = read_config(directory, what)
    section = raw.get(SECTION)
    if isinstance(section, dict):
        section = {"kind": "cross-encoder", **section}  # a cross-encoder's section had no kind before
    elif raw.get("kind") == LEGACY_MARKOV_KIND:
        section = {**raw, "kind": "markov"}
    else:
        raise ValueError(f"{Path(directory) / CONFIG_FILE} has no {SECTION!r} settings: it is a plain Hugging Face "
                         f"model or another program's file, not a trained {what}{hint and '; ' + hint}")
    if kind is not None and section["kind"] != kind:
        raise ValueError(f"{directory} is not a riposte {what}: its config.json says kind {section['kind']!r}, "
                         f"not {kind!r}{hint and '; ' + hint}")
    return section


def write(directory: str | os.PathLike, kind: str, format_version: int, settings: Mapping,
          extra: Mapping | None = None) -> None:
    """Write config.json into a (temporary) directory: `extra` keys at the top, our settings under SECTION."""
    data = {**(extra or {}), SECTION: {"kind": kind, "format_version": format_version, **settings}}
    (Path(directory) / CONFIG_FILE).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
