"""The replies benchmark's paired comparison (the engine runs themselves are a benchmark, not a test)."""

from benchmarks.bench_replies import paired


def test_a_paired_difference_counts_only_the_contexts_where_the_rows_differ():
    assert paired([1, 0, 1, 1], [0, 0, 1, 1]) == "+0.250 ± 0.250"  # one context of four moved
    assert paired([0.5, 0.2], [0.5, 0.2]) == "+0.000 ± 0.000"  # the same replies: no difference, no noise
    assert paired([0, 0, 0], [1, 1, 1]) == "-1.000 ± 0.000"
