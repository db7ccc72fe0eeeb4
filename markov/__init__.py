"""The Markov writer: fast, seeded, batched candidate generation from a word n-gram chain."""

from markov.chain import CHITCHAT_ORDER, Generation, MarkovConfig, MarkovModel, UnknownStartError
from markov.tokenize import detokenize, tokenize

__all__ = ["CHITCHAT_ORDER", "Generation", "MarkovConfig", "MarkovModel", "UnknownStartError", "detokenize", "tokenize"]
