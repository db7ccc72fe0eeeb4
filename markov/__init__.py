"""The Markov writer: fast, seeded, batched candidate generation from a word n-gram chain."""

from markov.chain import (
    AROUND_UNBIAS_ABOVE,
    CHITCHAT_ORDER,
    Generation,
    MarkovConfig,
    MarkovModel,
    UnknownStartError,
)
from markov.tokenize import detokenize, tokenize

__all__ = ["AROUND_UNBIAS_ABOVE", "CHITCHAT_ORDER", "Generation", "MarkovConfig", "MarkovModel", "UnknownStartError",
           "detokenize", "tokenize"]
