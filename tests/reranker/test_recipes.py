"""The default recipe's pieces: the fluency head learns, the mix finds the signal, bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reranker.editor import FluencyHead
from reranker.recipes import DefaultRecipe, fit_mix, train_fluency


def test_fluency_head_learns_a_separable_problem_and_reports_held_out_figures():
    rng = np.random.default_rng(0)
    n, h = 600, 8
    x = rng.normal(size=(n, h + 2)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 3] > 0).astype(np.float32)  # "human" is a direction of the embedding
    head = FluencyHead(h, width=16)
    report = train_fluency(head, x, y, seed=0, max_epochs=60, lr=3e-3)
    assert report["accuracy"] > 0.9 and report["auc"] > 0.95
    assert report["n_val"] == 60 and report["n_train"] == 540
    with torch.no_grad():
        z = head(torch.from_numpy(x)).numpy()
    assert ((z > 0) == (y > 0)).mean() > 0.9


def test_fluency_training_is_reproducible_under_a_seed():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 1] > 0).astype(np.float32)
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        head = FluencyHead(4, width=8)
        train_fluency(head, x, y, seed=3, max_epochs=5)
        outs.append([p.detach().clone() for p in head.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))


def test_fluency_training_refuses_one_class_or_too_little_data():
    head = FluencyHead(4, width=8)
    with pytest.raises(ValueError, match="both human"):
        train_fluency(head, np.zeros((40, 6), np.float32), np.ones(40))
    with pytest.raises(ValueError, match="at least 20"):
        train_fluency(head, np.zeros((5, 6), np.float32), np.array([0, 1, 0, 1, 0]))


def test_fit_mix_puts_weight_on_the_feature_that_finds_the_true_candidate():
    rng = np.random.default_rng(0)
    cases, k = 200, 12
    feats = rng.normal(size=(cases, k, 3)).astype(np.float32)
    feats[:, 0, 2] += 2.0  # only the third feature marks the true (first) candidate
    w = fit_mix(feats, init=(1.0, 1.0, 0.0))
    assert w[2] > 1.0 and abs(w[0]) < 0.5 * w[2] and abs(w[1]) < 0.5 * w[2]
    with pytest.raises(ValueError, match="feats must be"):
        fit_mix(feats[:, :, :2])


def test_recipe_config_checks():
    with pytest.raises(ValueError, match="max_minutes"):
        DefaultRecipe(max_minutes=0)
    with pytest.raises(ValueError, match="max_train_lines"):
        DefaultRecipe(max_train_lines=10)


def test_presets_and_their_overrides():
    assert DefaultRecipe.preset("default") == DefaultRecipe()
    large = DefaultRecipe.preset("large", seed=3, max_minutes=None)
    assert large.max_minutes == 60 and large.max_train_lines > DefaultRecipe().max_train_lines and large.seed == 3
    assert DefaultRecipe.preset("default", max_minutes=2.5).max_minutes == 2.5
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        DefaultRecipe.preset("huge")
