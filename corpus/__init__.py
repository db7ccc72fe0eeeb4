"""Corpus readers, cleaning and training-sample preparation for riposte."""

from corpus.documents import Document, Line

__all__ = ["Document", "Line"]
