"""The learner registry and the declared abilities: names, building, loading, a learner from
outside the package, and every clustering learner through the one evaluation path."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from metaunsup.checkpoint import save_checkpoint
from metaunsup.errors import ConfigError
from metaunsup.evaluation.clustering import evaluate_clustering, learner_method
from metaunsup.evaluation.fewshot import evaluate_fewshot
from metaunsup.learners import (
    LEARNERS,
    AdaptedState,
    AdaptiveEmbedder,
    AnomalyScorer,
    ClusteringLearner,
    Embedder,
    FewShotLearner,
    MetaLearner,
    build_learner,
    learner_class,
    load_learner,
    register_learner,
)
from tests.helpers.learners import gaussian_tasks

ABILITIES = (FewShotLearner, ClusteringLearner, Embedder, AdaptiveEmbedder, AnomalyScorer)

#: What each packaged learner declares; a change here is a change of the public contract.
DECLARED = {
    "maml": {FewShotLearner},
    "metasgd": {FewShotLearner},
    "reptile": {FewShotLearner},
    "anil": {FewShotLearner},
    "protonet": {FewShotLearner, Embedder},
    "meta_gmvae": {FewShotLearner, ClusteringLearner, Embedder, AnomalyScorer},
    "meta_kmeans": {ClusteringLearner, Embedder, AdaptiveEmbedder},
    "tabular_kmeans": {ClusteringLearner, Embedder, AdaptiveEmbedder, AnomalyScorer},
    "cluster_maml": {ClusteringLearner, Embedder, AdaptiveEmbedder},
    "imaml": {FewShotLearner},
    "meta_svdd": {AnomalyScorer, Embedder},
    "oc_maml": {AnomalyScorer},
}


def _mlp_learner(name: str) -> MetaLearner:
    cls = learner_class(name)
    n_way = None if cls.headless else (1 if name == "oc_maml" else 3)
    net: dict[str, Any] = {"name": "mlp", "in_features": 16, "hidden": [8], "n_way": n_way}
    if name == "meta_svdd":
        net["norm"] = "none"  # an embedding of every example on its own
    extra: dict[str, Any] = {"latent_dim": 2, "decoder_hidden": [4]} if name == "meta_gmvae" else {}
    return build_learner({"name": name, "net": net, **extra})


def test_every_builtin_learner_is_registered_under_its_name():
    assert set(LEARNERS) == set(DECLARED)
    for name, cls in LEARNERS.items():
        assert cls.name == name and learner_class(name) is cls


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_declared_abilities_are_the_ones_isinstance_sees(name: str):
    learner = _mlp_learner(name)
    bases = set(inspect.getmro(type(learner)))
    for ability in ABILITIES:
        assert isinstance(learner, ability) == (ability in DECLARED[name]), ability.__name__
        if ability in DECLARED[name] and ability is not AdaptiveEmbedder:
            # stated, not discovered: the class names the ability among its bases
            assert ability in bases or any(issubclass(b, ability) for b in bases if b is not object)


@pytest.mark.parametrize("name", [n for n, a in DECLARED.items() if ClusteringLearner in a])
def test_clustering_learners_share_one_signature_and_take_steps(name: str):
    learner = _mlp_learner(name).eval()
    params = inspect.signature(type(learner).cluster).parameters
    assert params["seed"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["steps"].kind is inspect.Parameter.KEYWORD_ONLY
    x = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(0))
    for steps in (None, 0, 2):
        labels = learner_method(name, learner, steps=steps).fn(x, 3, 0)
        assert labels.shape == (2, 12) and labels.dtype == torch.int64
        assert int(labels.min()) >= 0 and int(labels.max()) < 3


def test_a_learner_that_does_not_cluster_is_refused_by_the_clustering_protocol():
    with pytest.raises(ConfigError, match="does not cluster"):
        learner_method("m", _mlp_learner("maml"))


class NearestMean(MetaLearner, FewShotLearner, ClusteringLearner):
    """A toy learner written outside the package: nearest class mean in a linear embedding."""

    name: ClassVar[str] = "toy_nearest_mean"
    fixed_way: ClassVar[bool] = False
    headless: ClassVar[bool] = True

    def __init__(self, net, shrink: float = 1.0) -> None:
        super().__init__(net)
        self.shrink = shrink

    def hparams(self) -> dict[str, Any]:
        return {"shrink": self.shrink}

    def adapt(self, support_x, support_y, steps=None, *, differentiable=False, n_way=None):
        n_way = self.check_way(n_way or int(support_y.max()) + 1)
        z = self.net.functional_features(self.meta_params(differentiable), support_x)
        onehot = F.one_hot(support_y, n_way).to(z.dtype)
        means = onehot.transpose(1, 2) @ z / onehot.sum(1).unsqueeze(-1)
        return AdaptedState(self.meta_params(differentiable), z.shape[0], n_way, {"m": means})

    def predict(self, state: AdaptedState, x: Tensor) -> Tensor:
        z = self.net.functional_features(state.params, x)
        return -torch.cdist(z, state.extras["m"]) * self.shrink

    def fewshot_logits(self, batch, steps=None):
        return self.query_logits(batch, steps)

    def cluster(self, x: Tensor, k: int, *, seed: int = 0, steps: int | None = None) -> Tensor:
        z = self.net.functional_features(self.meta_params(False), x)
        return torch.cdist(z, z[:, :k]).argmin(-1)


@pytest.fixture
def toy_registered():
    """``NearestMean`` registered through the public function, for one test only."""
    register_learner(NearestMean)
    yield
    del LEARNERS[NearestMean.name]


@pytest.mark.usefixtures("toy_registered")
def test_a_learner_from_outside_trains_saves_loads_and_evaluates(tmp_path):
    assert learner_class("toy_nearest_mean") is NearestMean
    config = {"name": "toy_nearest_mean", "net": {"name": "mlp", "in_features": 16,
              "hidden": [8], "n_way": None}, "shrink": 2.0}  # fmt: skip
    learner = build_learner(config)
    opt = torch.optim.Adam(learner.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        loss, _ = learner.meta_loss(gaussian_tasks(4, 3, 2, 3, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "toy.safetensors"
    tensors = {f"model.{k}": v for k, v in learner.state_dict().items()}
    save_checkpoint(path, tensors, {"kind": "model", "learner": learner.config()})
    loaded = load_learner(path)
    assert isinstance(loaded, NearestMean) and loaded.shrink == 2.0
    batch = gaussian_tasks(2, 3, 2, 3, g)
    torch.testing.assert_close(loaded.fewshot_logits(batch), learner.eval().fewshot_logits(batch))


@pytest.mark.usefixtures("toy_registered")
def test_registering_a_taken_name_or_a_non_learner_is_refused():
    class Other(NearestMean):
        name: ClassVar[str] = "maml"

    with pytest.raises(ConfigError, match="registered already"):
        register_learner(Other)
    with pytest.raises(ConfigError, match="MetaLearner subclass"):
        register_learner(dict)  # type: ignore[type-var]
    with pytest.raises(ConfigError, match="unknown learner 'nope'"):
        build_learner({"name": "nope", "net": {"name": "mlp", "in_features": 2}})


def test_few_shot_evaluation_refuses_a_learner_that_only_clusters(data_root):
    from metaunsup.data import load

    with pytest.raises(ConfigError, match="does not classify few-shot tasks"):
        evaluate_fewshot(
            load("digits", "test"), [("mk", _mlp_learner("meta_kmeans"))],
            n_way=3, k_shot=1, n_query=1, n_tasks=1,
        )  # fmt: skip


def test_every_clustering_learner_runs_through_the_evaluation_protocol():
    from metaunsup.data.base import Dataset

    g = torch.Generator().manual_seed(1)
    ds = Dataset(name="toy", split="all", x=torch.randn(60, 16, generator=g),
                 y=torch.arange(3).repeat(20), classes=["a", "b", "c"])  # fmt: skip
    methods = [
        learner_method(n, _mlp_learner(n).eval(), steps=1)
        for n, a in DECLARED.items()
        if ClusteringLearner in a
    ]
    report = evaluate_clustering(ds, methods, n_way=3, k_shot=5, n_tasks=4)
    assert [r.method for r in report.results] == [m.name for m in methods]
    assert all(0.0 <= r.scores["acc"].mean <= 1.0 for r in report.results)
