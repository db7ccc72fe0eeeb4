"""One `load(dir)` for every kind of editor: config.json is read once and its `kind` picks the class.

As sentence-transformers' modules.json names the class of each module, a saved riposte model names its kind in its
config.json ("riposte" section, `corpus.modeldir`), and `KINDS` maps that name to the class that loads it. Each
class reads its own settings from the section in `from_saved(directory, settings, **options)`, so adding a kind
touches this one table.
"""

from __future__ import annotations

import os

from corpus import modeldir
from reranker.biencoder import BiEncoder
from reranker.cross_encoder import KIND as CROSS_ENCODER
from reranker.cross_encoder import CrossEncoder
from reranker.editor import Editor

KINDS: dict[str, type] = {
    "editor": Editor,  # the default: bi-encoder + fluency head + learned mix
    "biencoder": BiEncoder,  # the zero-shot baseline, or a fine-tuned one
    CROSS_ENCODER: CrossEncoder,  # `[CLS] context [SEP] candidate [SEP]`, one logit
}
# Riposte models that are no editor: named, so a wrong directory says what it is and how to load it.
NOT_EDITORS = {
    "markov": "a Markov writer (markov.MarkovModel.load, python -m markov)",
    "first_stage": "a first stage, which orders candidates for an editor (reranker.first_stage.FirstStage.load)",
}


def load(directory: str | os.PathLike, **options):
    """Load whatever editor a directory holds (`KINDS`); options (device, dtype, warmup, backend) go to its class.

    bf16 where the hardware has it unless `dtype` says otherwise.
    """
    return _load(directory, KINDS, options)


def _load(directory: str | os.PathLike, kinds: dict[str, type], options: dict):
    settings = modeldir.read(directory, "reranker")
    kind = settings["kind"]
    cls = kinds.get(kind)
    if kind in NOT_EDITORS:
        raise ValueError(f"{os.fspath(directory)} holds {NOT_EDITORS[kind]}, not an editor")
    if cls is None:
        raise ValueError(f"{os.fspath(directory)}/config.json: unknown riposte model kind {kind!r} (this riposte "
                         f"reads {', '.join(sorted(kinds))}); it was written by a newer riposte")
    return cls.from_saved(directory, settings, **options)


class Reranker(CrossEncoder):
    """The cross-encoder under its first name, kept so that code written for it runs unchanged.

    `Reranker.load(dir)` loads any kind, as it always did (an editor directory gives an `Editor`).
    """

    @classmethod
    def load(cls, directory: str | os.PathLike, **options):
        """Load whatever editor a directory holds; a cross-encoder comes back as a `Reranker`."""
        return _load(directory, {**KINDS, CROSS_ENCODER: cls}, options)
