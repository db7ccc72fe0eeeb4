"""The cross-encoder editor: loading, budgeted scoring, training and evaluation (`python -m reranker`)."""

from reranker.model import BackboneNotFoundError, Reranker, RerankerConfig

__all__ = ["BackboneNotFoundError", "Reranker", "RerankerConfig"]
