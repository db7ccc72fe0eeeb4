"""riposte server package."""
