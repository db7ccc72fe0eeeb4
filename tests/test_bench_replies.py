"""The replies benchmark's paired comparison (the engine runs themselves are a benchmark, not a test)."""

from benchmarks.bench_replies import paired


def test_a_paired_difference_is_the_mean_over_every_context_with_its_standard_error():
    assert paired([1, 0, 1, 1], [0, 0, 1, 1]) == "+0.250 ± 0.250"  # one context of four moved
    assert paired([0.5, 0.2], [0.5, 0.2]) == "+0.000 ± 0.000"  # the same replies: no difference, no noise
    assert paired([0, 0, 0], [1, 1, 1]) == "-1.000 ± 0.000"


def test_mean_se_of_one_value_has_no_spread():
    from benchmarks.bench_replies import mean_se

    assert mean_se([0.25]) == (0.25, 0.0)
    assert mean_se([0, 1]) == (0.5, 0.5)
