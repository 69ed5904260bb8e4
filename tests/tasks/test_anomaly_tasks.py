"""One-class tasks: layout, the anomaly sources, contamination, seeding and chunking, and the
CACTUs pseudo-tasks that never read a label."""

from __future__ import annotations

import pytest
import torch

from metaunsup.data.base import Dataset
from metaunsup.data.unlabeled import UnlabeledView
from metaunsup.errors import ConfigError, DataError, LabelAccessError
from metaunsup.tasks.anomaly import AnomalyTaskSampler
from metaunsup.tasks.pseudo.cactus_anomaly import CactusAnomalySource, pseudo_class_groups


def _grouped(n_per_class: int = 12) -> Dataset:
    """6 classes in 3 groups (a, a, b, b, c, c); x holds the example index."""
    y = torch.arange(6).repeat_interleave(n_per_class)
    x = torch.arange(len(y), dtype=torch.float32).unsqueeze(1)
    return Dataset("toy", "all", x, y, tuple("012345"), groups=("a", "a", "b", "b", "c", "c"))


def test_layout_support_normal_query_balanced_and_labels_only_in_y():
    ds = _grouped()
    batch = AnomalyTaskSampler(ds, k_shot=3, n_query=4, seed=0).sample(50)
    assert batch.x.shape == (50, 3 + 8, 1) and batch.n_way == 1 and batch.k_shot == 3
    assert batch.support_x.shape == (50, 3, 1) and batch.query_x.shape == (50, 8, 1)
    normal = batch.classes[:, 0]
    labels = ds.y[batch.indices]  # [B, n]
    assert torch.equal(labels[:, :3], normal.unsqueeze(1).expand(-1, 3))
    assert torch.equal(batch.y, (labels != normal.unsqueeze(1)).long())
    assert torch.equal(batch.query_y.sum(1), torch.full((50,), 4))
    # distinct examples within a task; query order shuffled (not all normals first)
    assert all(len(set(row.tolist())) == 11 for row in batch.indices)
    assert bool((batch.query_y[:, 0] == 1).any()) and bool((batch.query_y[:, 0] == 0).any())


@pytest.mark.parametrize(("source", "same_group"), [("other-groups", False), ("same-group", True)])
def test_anomalies_from_other_or_the_same_group(source: str, same_group: bool):
    ds = _grouped()
    batch = AnomalyTaskSampler(ds, 2, 5, seed=1, anomalies=source).sample(30)
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    anomalous = ds.y[batch.indices][batch.y == 1].reshape(30, -1)
    normal_group = groups[batch.classes[:, 0]].unsqueeze(1)
    assert bool(((groups[anomalous] == normal_group) == same_group).all())


def test_normal_classes_seeds_and_chunks():
    ds = _grouped()
    a = AnomalyTaskSampler(ds, 2, 3, seed=7, normal_classes=[4])
    one = a.sample(12)
    assert bool((one.classes == 4).all())
    b = AnomalyTaskSampler(ds, 2, 3, seed=7, normal_classes=[4])
    chunks = list(b.batches(12, 5))
    assert [c.n_tasks for c in chunks] == [5, 5, 2]
    assert torch.equal(torch.cat([c.indices for c in chunks]), one.indices)
    assert not torch.equal(AnomalyTaskSampler(ds, 2, 3, seed=8).sample(12).indices, one.indices)


def test_contamination_puts_whole_anomalies_in_the_support():
    batch = AnomalyTaskSampler(_grouped(), 10, 2, seed=0, contamination=0.2).sample(20)
    assert torch.equal(batch.support_y.sum(1), torch.full((20,), 2))
    with pytest.raises(ConfigError, match="is no example"):
        AnomalyTaskSampler(_grouped(), 2, 2, contamination=0.1)


def test_bad_settings_are_config_errors():
    ds = _grouped(4)
    with pytest.raises(ConfigError, match="no class has"):
        AnomalyTaskSampler(ds, 3, 2)
    plain = Dataset("toy", "all", ds.x, ds.y, ds.classes)
    with pytest.raises(ConfigError, match="needs classes with groups"):
        AnomalyTaskSampler(plain, 1, 1, anomalies="same-group")
    with pytest.raises(ConfigError, match="normal_classes"):
        AnomalyTaskSampler(ds, 1, 1, normal_classes=[9])


def test_cactus_anomaly_tasks_come_from_partitions_without_labels():
    ds = _grouped()
    parts = torch.stack([ds.y % 3, ds.y // 2])  # two partitions of the 72 examples
    source = CactusAnomalySource(UnlabeledView(ds), parts, 3, 4, seed=0)
    with pytest.raises(LabelAccessError):
        _ = source.view.y
    batch = source.sample(40)
    partition, cluster = batch.classes[:, 0] // source.n_clusters, batch.classes[:, 0] % 3
    for b in range(40):
        row = parts[int(partition[b])][batch.indices[b]]
        assert torch.equal(batch.y[b], (row != cluster[b]).long())
    wider = source.with_shape(5, 2, seed=1).sample(3)
    assert wider.support_x.shape[1] == 5 and wider.query_x.shape[1] == 4
    with pytest.raises(DataError, match="partitions must be"):
        CactusAnomalySource(ds.x, parts[:, :10], 2, 2)


def _blobs_in_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """``(z [96, 2], one partition [1, 96])``: 8 clusters of 12 points; clusters 2i and 2i + 1
    sit side by side, and the four pairs lie far apart."""
    g = torch.Generator().manual_seed(0)
    pair_at = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    cluster_at = pair_at.repeat_interleave(2, 0) + torch.tensor([[0.0, 0.0], [5.0, 0.0]]).repeat(
        4, 1
    )
    labels = torch.arange(8).repeat_interleave(12)
    z = cluster_at[labels] + 0.1 * torch.randn(96, 2, generator=g)
    return z, labels.unsqueeze(0)


def test_pseudo_class_groups_pair_clusters_that_are_neighbours():
    z, parts = _blobs_in_pairs()
    groups = pseudo_class_groups(z, parts, 4, seed=0)
    assert groups.shape == (1, 8) and groups.dtype == torch.int64
    for i in range(4):  # each side-by-side pair shares a group, and no two pairs do
        assert groups[0, 2 * i] == groups[0, 2 * i + 1]
    assert len(set(groups[0, ::2].tolist())) == 4
    assert torch.equal(groups, pseudo_class_groups(z, parts, 4, seed=0))
    with pytest.raises(DataError, match="fewer than the 9 groups"):
        pseudo_class_groups(z, parts, 9)
    with pytest.raises(DataError, match="same examples"):
        pseudo_class_groups(z[:10], parts, 4)


def test_near_pseudo_anomalies_come_from_the_normal_clusters_group():
    z, parts = _blobs_in_pairs()
    groups = pseudo_class_groups(z, parts, 4, seed=0)
    near = CactusAnomalySource(z, parts, 3, 4, seed=0, anomalies="same-group", groups=groups)
    batch = near.sample(40)
    for b in range(40):  # every anomaly is from the normal cluster's twin, the only neighbour
        normal = int(batch.classes[b, 0])
        cluster = parts[0][batch.indices[b]]
        assert torch.equal(cluster[batch.y[b] == 1], torch.full((4,), normal ^ 1))
    far = CactusAnomalySource(z, parts, 3, 4, seed=0).sample(40)
    twins = [(parts[0][far.indices[b]][far.y[b] == 1] == int(far.classes[b, 0]) ^ 1).float().mean()
             for b in range(40)]  # fmt: skip
    assert float(torch.stack(twins).mean()) < 0.5  # from any cluster: mostly not the twin
    with pytest.raises(ConfigError, match="needs classes with groups"):
        CactusAnomalySource(z, parts, 3, 4, anomalies="same-group")
    with pytest.raises(DataError, match="groups must be"):
        CactusAnomalySource(z, parts, 3, 4, anomalies="same-group", groups=groups[:, :4])


def test_the_hard_kind_needs_groups_of_pseudo_classes_and_the_easy_kind_ignores_them():
    from metaunsup.evaluation.anomaly import ANOMALY, ANOMALY_HARD
    from metaunsup.evaluation.protocol import TaskShape

    z, parts = _blobs_in_pairs()
    view, shape = (
        UnlabeledView(Dataset("toy", "all", z, parts[0], tuple("01234567"))),
        TaskShape(1, 3, 4),
    )
    with pytest.raises(ConfigError, match="pseudo_groups"):
        ANOMALY_HARD.pseudo_source(view, parts, shape, 0, None)
    groups = pseudo_class_groups(z, parts, 4)
    assert ANOMALY_HARD.pseudo_source(view, parts, shape, 0, groups).anomalies == "same-group"
    assert ANOMALY.pseudo_source(view, parts, shape, 0, groups).anomalies == "other-classes"
