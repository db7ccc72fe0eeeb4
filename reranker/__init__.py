"""The editor: the default (bi-encoder + fluency head), the cross-encoder, budgeted scoring, training, evaluation.

`Reranker.load(dir)` loads whichever a directory holds; `python -m reranker` trains and evaluates.

The public names load reranker.model (and torch) on first use (PEP 562), so `import reranker.encoding`
stays light: corpus prepare workers import it for `encode_pair` without paying for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reranker.model import BackboneNotFoundError, Reranker, RerankerConfig

__all__ = ["BackboneNotFoundError", "Reranker", "RerankerConfig"]


def __getattr__(name: str):
    """Load a public name from reranker.model on first access."""
    if name in __all__:
        from reranker import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Module attributes plus the lazily loaded public names."""
    return sorted({*globals(), *__all__})
