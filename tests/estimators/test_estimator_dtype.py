"""The estimator's dtypes: a batch-norm checkpoint embeds in float32 with the labels float64
gave; a batch-independent network keeps float64 (its embeddings must not depend on the batch)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from metaunsup import MetaKMeans
from metaunsup.metrics import clustering_accuracy


class Float64MetaKMeans(MetaKMeans):
    def _set_learner(self, learner):
        super()._set_learner(learner)
        self.learner_ = self.learner_.double()


def test_checkpoint_in_float32_gives_the_float64_labels():
    X, y = load_digits(return_X_y=True)
    fast = MetaKMeans(10, checkpoint="digits", random_state=0).fit(X)
    exact = Float64MetaKMeans(10, checkpoint="digits", random_state=0).fit(X)
    assert next(fast.learner_.parameters()).dtype == torch.float32
    assert next(exact.learner_.parameters()).dtype == torch.float64
    assert np.array_equal(fast.labels_, exact.labels_)
    assert clustering_accuracy(y, fast.labels_) > 0.93  # docs/python.md: 0.945
    assert fast.transform(X[:5]).dtype == np.float64


def test_self_trained_mlp_keeps_float64_embeddings():
    X, _ = load_digits(return_X_y=True)
    model = MetaKMeans(10, meta_steps=2, random_state=0).fit(X[:200])
    assert next(model.learner_.parameters()).dtype == torch.float64
    subset, alone = model.transform(X[:200])[50:60], model.transform(X[50:60])
    np.testing.assert_allclose(subset, alone, rtol=1e-12, atol=1e-14)
