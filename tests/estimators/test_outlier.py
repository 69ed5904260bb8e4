"""``metaunsup.MetaOutlierDetector``: the scikit-learn contract, thresholds at a false-alarm
rate (split conformal, leave-one-out, meta-calibrated), PyOD's attributes and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from metaunsup import MetaOutlierDetector
from metaunsup.errors import CheckpointError, ConfigError, DataError
from metaunsup.learners import load_learner
from tests.helpers.anomaly import svdd_checkpoint
from tests.helpers.estimators import digits_xy, train_mlp_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("outlier")
    return {
        "svdd": svdd_checkpoint(folder / "svdd.safetensors"),
        "kmeans": train_mlp_checkpoint(folder / "kmeans.safetensors", steps=2),
    }


# Every scikit-learn check passes; none is listed as an expected failure.
@parametrize_with_checks([MetaOutlierDetector()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_split_conformal_false_alarms_and_pyod_attributes():
    rng = np.random.default_rng(0)
    detector = MetaOutlierDetector(random_state=0).fit(rng.normal(size=(400, 4)))
    assert detector.calibration_ == "conformal-split" and detector.n_reference_ == 200
    flagged = detector.predict(rng.normal(size=(4000, 4))) == -1
    assert 0.03 < flagged.mean() < 0.07  # fpr = 0.05 on fresh normal data
    assert (detector.predict(np.full((3, 4), 8.0)) == -1).all()
    assert detector.decision_scores_.shape == (400,) and set(detector.labels_) <= {0, 1}
    point = [[0.5] * 4]
    np.testing.assert_allclose(
        detector.decision_function(point), detector.threshold_ + detector.score_samples(point)
    )
    fresh = rng.normal(size=(500, 4))
    p = detector.pvalues(fresh)
    np.testing.assert_array_equal(p <= 0.05, detector.predict(fresh) == -1)
    assert p.min() > 0 and p.max() <= 1


def test_contamination_is_pyods_share_of_the_training_data():
    rng = np.random.default_rng(1)
    detector = MetaOutlierDetector(contamination=0.1).fit(rng.normal(size=(300, 3)))
    assert detector.calibration_ == "contamination"
    assert detector.labels_.mean() == pytest.approx(0.1, abs=0.01)


def test_a_few_examples_use_the_checkpoints_meta_calibration(checkpoints):
    X, y = digits_xy(400)
    normal = X[y == 3]
    few = MetaOutlierDetector(str(checkpoints["svdd"])).fit(normal[:5])
    assert few.calibration_ == "meta" and np.isfinite(few.threshold_)
    others = X[y != 3]
    ours = (few.predict(others) == -1).mean(), (few.predict(normal[5:]) == -1).mean()
    assert ours[0] > 0.5 and ours[1] < 0.3  # most other digits flagged, few threes
    plain = MetaOutlierDetector()
    with pytest.warns(UserWarning, match="nothing will be flagged"):
        plain.fit(normal[:5])
    assert plain.calibration_ == "none" and (plain.predict(others) == 1).all()
    loo = MetaOutlierDetector(str(checkpoints["svdd"]), calibration="conformal").fit(normal[:30])
    assert loo.calibration_ == "conformal-loo" and loo.calibration_scores_.shape == (30,)


def test_bad_input_and_parameters(checkpoints):
    X, _ = digits_xy(50)
    with pytest.raises(DataError, match="1 sample"):
        MetaOutlierDetector().fit(X[:1])
    with pytest.raises(DataError, match="identical"):
        MetaOutlierDetector().fit(np.repeat(X[:1], 5, axis=0))
    fitted = MetaOutlierDetector().fit(X)
    with pytest.raises(DataError, match="expecting 64 features"):
        fitted.predict(X[:, :10])
    for fpr in (0.0, 1.0, -1, 2):
        with pytest.raises(ConfigError, match="fpr"):
            MetaOutlierDetector(fpr=fpr).fit(X)
    with pytest.raises(CheckpointError, match="does not score anomalies"):
        MetaOutlierDetector(str(checkpoints["kmeans"])).fit(X)
    with pytest.raises(ConfigError, match="contamination"):
        MetaOutlierDetector(contamination=0.7).fit(X)


def test_boundary_calibration_is_the_checkpoints_learned_boundary(checkpoints):
    X, y = digits_xy(400)
    normal = X[y == 3]
    model = MetaOutlierDetector(str(checkpoints["svdd"]), calibration="boundary").fit(normal[:3])
    learner = load_learner(str(checkpoints["svdd"]))
    radius = learner.decision_boundary(3)  # the boundary at the reference's size, 3 examples
    assert radius > float(learner.radius)  # meta-learned at 5: a smaller support's is wider
    assert model.calibration_ == "boundary" and model.threshold_ == pytest.approx(radius)
    scores = -model.score_samples(X)
    np.testing.assert_array_equal(model.predict(X) == -1, scores > radius)
    assert (model.predict(X[y != 3]) == -1).mean() > (model.predict(normal[3:]) == -1).mean()
    assert model.calibration_scores_.shape == (3,)  # pvalues stay conformal
    with pytest.raises(ConfigError, match="needs a checkpoint that meta-learned a decision"):
        MetaOutlierDetector(calibration="boundary").fit(normal)
    with pytest.raises(ConfigError, match="give one"):
        MetaOutlierDetector(calibration="boundary", contamination=0.1).fit(normal)
