"""riposte markov package."""
