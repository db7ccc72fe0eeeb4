"""The editor: whatever scores candidate replies. The default (bi-encoder + fluency head), the cross-encoder, the
first stage, budgeted scoring, training and evaluation.

`reranker.load(dir)` loads whichever kind a directory holds (`Reranker.load(dir)`, its older spelling, still
does); `python -m reranker` prepares, trains and evaluates.

The public names load their modules (and torch) on first use (PEP 562), so `import reranker.pairs` stays light:
prepare's worker processes import it for `encode_pair` without paying for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reranker.cross_encoder import CrossEncoder, CrossEncoderConfig, RerankerConfig
    from reranker.loading import Reranker, load
    from reranker.runtime import BackboneNotFoundError

_HOMES = {
    "load": "reranker.loading",
    "Reranker": "reranker.loading",
    "CrossEncoder": "reranker.cross_encoder",
    "CrossEncoderConfig": "reranker.cross_encoder",
    "RerankerConfig": "reranker.cross_encoder",
    "BackboneNotFoundError": "reranker.runtime",
}
__all__ = ["BackboneNotFoundError", "CrossEncoder", "CrossEncoderConfig", "Reranker", "RerankerConfig", "load"]


def __getattr__(name: str):
    """Load a public name from its module on first access."""
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Module attributes plus the lazily loaded public names."""
    return sorted({*globals(), *__all__})
