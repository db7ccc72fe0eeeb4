"""riposte reranker package."""
