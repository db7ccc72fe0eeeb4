"""The Markov writer: fast, seeded, batched candidate generation from a word n-gram chain."""

from markov.chain import (
    AROUND_UNBIAS_ABOVE,
    CHITCHAT_ORDER,
    CONTEXT_SEED_LINES,
    CONTEXT_SEED_WORDS,
    Generation,
    MarkovConfig,
    MarkovModel,
    UnknownStartError,
)
from markov.splices import Splice, Splices
from markov.tokenize import detokenize, tokenize

__all__ = ["AROUND_UNBIAS_ABOVE", "CHITCHAT_ORDER", "CONTEXT_SEED_LINES", "CONTEXT_SEED_WORDS", "Generation", "MarkovConfig", "MarkovModel", "Splice", "Splices",
           "UnknownStartError", "detokenize", "tokenize"]
