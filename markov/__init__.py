"""The Markov writer: fast, seeded, batched candidate generation from a word n-gram chain."""

from markov.chain import Generation, MarkovConfig, MarkovModel, UnknownStartError
from markov.tokenize import detokenize, tokenize

__all__ = ["Generation", "MarkovConfig", "MarkovModel", "UnknownStartError", "detokenize", "tokenize"]
