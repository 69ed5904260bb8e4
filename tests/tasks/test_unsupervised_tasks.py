"""Label-free task sources: UnlabeledView, CACTUs partitions and tasks, UMTRA tasks."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch

from metaunsup.data import Dataset
from metaunsup.data.augment import Augment
from metaunsup.data.unlabeled import UnlabeledView, as_unlabeled
from metaunsup.embed import net_embeddings
from metaunsup.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    LabelAccessError,
    MetaUnsupError,
)
from metaunsup.nets import Conv4
from metaunsup.tasks import TaskBatch
from metaunsup.tasks.pseudo import cactus as cactus_module
from metaunsup.tasks.pseudo.cactus import (
    CactusTaskSource,
    cactus_partitions,
    load_partitions,
    save_partitions,
)
from metaunsup.tasks.pseudo.umtra import UmtraTaskSource
from metaunsup.training.pretraining import pretrain_contrastive

FIELDS = ("x", "y", "classes", "indices")


def same(a: TaskBatch, b: TaskBatch) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def image_dataset(n: int = 60, size: int = 8, seed: int = 0) -> Dataset:
    """``uint8`` images whose first pixel encodes the example index (to check gathers)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    y = torch.arange(n) % 3
    return Dataset(name="toy", split="train", x=x, y=y, classes=("a", "b", "c"))


def blobs(
    n_per: int = 30, k: int = 4, d: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated Gaussian blobs: ``(points [k*n_per, d], blob id [k*n_per])``."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 20
    ids = torch.arange(k).repeat_interleave(n_per)
    return centres[ids] + torch.randn(k * n_per, d, generator=g), ids


def same_grouping(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two labelings group the points identically (up to renaming)."""
    pairs = torch.unique(torch.stack([a.long(), b.long()]), dim=1)
    return pairs.shape[1] == torch.unique(a).numel() == torch.unique(b).numel()


# ----------------------------------------------------------------------------- UnlabeledView


def test_view_exposes_examples_and_hides_labels():
    ds = image_dataset()
    view = UnlabeledView(ds)
    assert view.x is ds.x and len(view) == 60 and view.example_shape == (1, 8, 8)
    assert (view.name, view.split) == ("toy", "train")
    for attr in ("y", "labels", "targets", "classes", "groups", "n_classes"):
        with pytest.raises(LabelAccessError, match="without labels"):
            getattr(view, attr)
    with pytest.raises(LabelAccessError):
        view.class_counts()
    with pytest.raises(LabelAccessError):
        view.subset_classes([0])
    assert issubclass(LabelAccessError, MetaUnsupError)
    with pytest.raises(AttributeError):
        _ = view.dataset  # no way back to the labelled dataset
    with pytest.raises(AttributeError):
        view.x = torch.zeros(1)
    assert not hasattr(view, "__dict__")
    copied = pickle.loads(pickle.dumps(view))
    assert torch.equal(copied.x, view.x) and (copied.name, copied.split) == ("toy", "train")
    with pytest.raises(LabelAccessError):
        _ = copy.copy(view).y


def test_view_from_tensor_subset_and_as_unlabeled():
    x = torch.rand(10, 4)
    view = as_unlabeled(x)
    assert isinstance(view, UnlabeledView) and view.name == "array"
    assert as_unlabeled(view) is view
    sub = view.subset(torch.tensor([1, 3]))
    assert torch.equal(sub.x, x[[1, 3]]) and sub.example_shape == (4,)
    assert torch.equal(view.float_x(), x)
    assert "n=10" in repr(view)
    with pytest.raises(DataError):
        UnlabeledView([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(DataError):
        UnlabeledView(torch.zeros(0, 3))


def test_unsupervised_paths_run_through_a_view_that_raises_on_labels():
    """Every unsupervised trainer and task source works on a view that refuses labels."""
    view = UnlabeledView(image_dataset(n=40, size=8))
    with pytest.raises(LabelAccessError):
        _ = view.y
    net = Conv4(1, n_way=None, hidden=4, image_size=8)
    result = pretrain_contrastive(net, view, steps=2, batch_size=8, proj_dim=4)
    assert result.steps == 2
    z = net_embeddings(net, view.float_x())
    assert z.shape == (40, 4)
    parts = cactus_partitions(z, n_partitions=2, k=3, seed=0)
    batch = CactusTaskSource(view, parts, n_way=2, k_shot=1, n_query=1, seed=0).sample(3)
    assert batch.x.shape == (3, 4, 1, 8, 8)
    batch = UmtraTaskSource(view, n_way=3, n_query=2, seed=0).sample(2)
    assert batch.x.shape == (2, 9, 1, 8, 8)


# ----------------------------------------------------------------------------- partitions


def test_partitions_shape_dtype_range_and_determinism():
    z, _ = blobs()
    parts = cactus_partitions(z, n_partitions=5, k=4, seed=0)
    assert parts.shape == (5, 120) and parts.dtype == torch.int32
    assert int(parts.min()) >= 0 and int(parts.max()) < 4
    assert torch.equal(parts, cactus_partitions(z, n_partitions=5, k=4, seed=0))
    assert not torch.equal(parts, cactus_partitions(z, n_partitions=5, k=8, seed=1)[:, :])


def test_first_partition_is_plain_kmeans_and_scaling_diversifies():
    z, ids = blobs(k=4, d=8)
    parts = cactus_partitions(z, n_partitions=6, k=4, seed=0, fit_size=None)
    assert same_grouping(parts[0], ids)  # unscaled k-means finds the blobs
    z2 = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))  # no structure
    scaled = cactus_partitions(z2, n_partitions=6, k=5, seed=0)
    assert len({tuple(p.tolist()) for p in scaled}) == 6  # every scaling gives a new partition


def test_subsample_fit_assigns_every_point():
    z, ids = blobs(n_per=100, k=3, d=4)
    parts = cactus_partitions(z, n_partitions=2, k=3, seed=0, fit_size=30, refine_iter=0)
    assert same_grouping(parts[0], ids)  # centres from 30 points, labels for all 300


def test_partition_arguments_are_checked():
    z, _ = blobs()
    with pytest.raises(ConfigError):
        cactus_partitions(z, n_partitions=0, k=2)
    with pytest.raises(ConfigError):
        cactus_partitions(z, n_partitions=1, k=1000)
    with pytest.raises(DataError):
        cactus_partitions(z[:, 0], n_partitions=1, k=2)
    bad = z.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(DataError):
        cactus_partitions(bad, n_partitions=1, k=2)


def test_save_load_and_cache(tmp_path, monkeypatch):
    z, _ = blobs()
    path = tmp_path / "parts.safetensors"
    parts = cactus_partitions(z, n_partitions=3, k=4, seed=0)
    save_partitions(path, parts, {"note": "x"})
    loaded, info = load_partitions(path)
    assert torch.equal(loaded, parts) and loaded.dtype == torch.int32 and info == {"note": "x"}

    cache = tmp_path / "cache.safetensors"
    first = cactus_partitions(z, n_partitions=3, k=4, seed=0, cache=cache)
    assert torch.equal(first, parts) and cache.is_file()

    def no_kmeans(*args, **kwargs):
        raise AssertionError("k-means ran although the cache matched")

    monkeypatch.setattr(cactus_module, "kmeans", no_kmeans)
    assert torch.equal(cactus_partitions(z, n_partitions=3, k=4, seed=0, cache=cache), parts)
    with pytest.raises(AssertionError, match="k-means ran"):  # other settings: recompute
        cactus_partitions(z, n_partitions=3, k=4, seed=1, cache=cache)
    with pytest.raises(AssertionError, match="k-means ran"):  # other embeddings: recompute
        cactus_partitions(z + 1, n_partitions=3, k=4, seed=0, cache=cache)

    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_partitions(tmp_path / "junk.safetensors")


# ----------------------------------------------------------------------------- CACTUs tasks


def hand_partitions() -> torch.Tensor:
    """Three partitions of 20 examples with known cluster sizes.

    0: clusters of 5, 5, 5, 3, 2 (three usable for k_shot + n_query = 4);
    1: clusters 0..3 of 5 each (four usable);
    2: 10 and 10, then nothing (two usable: too few for n_way=3).
    """
    p0 = torch.tensor([0] * 5 + [1] * 5 + [2] * 5 + [3] * 3 + [4] * 2)
    p1 = torch.arange(20) % 4
    p2 = torch.arange(20) // 10
    g = torch.Generator().manual_seed(0)
    return torch.stack([p[torch.randperm(20, generator=g)] for p in (p0, p1, p2)])


def test_cactus_tasks_follow_the_partitions():
    parts = hand_partitions()
    view = UnlabeledView(image_dataset(n=20))
    src = CactusTaskSource(view, parts, n_way=3, k_shot=2, n_query=2, seed=0)
    assert src.partition_ids.tolist() == [0, 1]  # partition 2 has only two usable clusters
    batch = src.sample(200)
    assert batch.x.shape == (200, 12, 1, 8, 8) and batch.n_support == 6
    way = torch.arange(3)
    assert torch.equal(batch.support_y, way.repeat_interleave(2).expand(200, -1))
    assert torch.equal(batch.query_y, way.repeat_interleave(2).expand(200, -1))
    partition, cluster = src.decode_classes(batch.classes)
    assert torch.equal(partition, partition[:, :1].expand(-1, 3))
    for t in range(200):
        p = int(partition[t, 0])
        labels = parts[p, batch.indices[t]].long()
        assert torch.equal(labels, cluster[t][batch.y[t]])  # pseudo-labels = clusters
        assert batch.indices[t].unique().numel() == 12
        assert cluster[t].unique().numel() == 3
    small = (partition == 0) & (cluster >= 3)  # clusters 3 and 4 of partition 0 are too small
    assert not bool(small.any())
    # Examples are gathered from the view: the first pixel encodes the index.
    assert torch.equal((batch.x[:, :, 0, 0, 0] * 255).round().long(), batch.indices)
    # Both usable partitions are drawn, about equally often.
    share = float((partition[:, 0] == 0).float().mean())
    assert 0.35 < share < 0.65


def test_cactus_determinism_and_resume():
    parts = hand_partitions()
    view = UnlabeledView(image_dataset(n=20))

    def make(seed=0):
        return CactusTaskSource(view, parts, n_way=3, k_shot=1, n_query=3, seed=seed)

    a, b = make(), make()
    assert same(a.sample(5), b.sample(5))
    assert not same(make(0).sample(5), make(1).sample(5))
    a.sample(3)
    state = a.state_dict()
    # What a checkpoint keeps: tensors, and JSON scalars for the rest.
    json.dumps({k: v for k, v in state.items() if not isinstance(v, torch.Tensor)})
    expected = a.sample(4)
    c = make()
    c.load_state_dict(state)
    assert same(c.sample(4), expected) and c.tasks_drawn == 12
    with pytest.raises(ConfigError):
        make(seed=5).load_state_dict(state)
    a.reset()
    assert same(a.sample(5), make().sample(5))


def test_cactus_shuffled_clustering_layout():
    parts = hand_partitions()
    src = CactusTaskSource(image_dataset(n=20), parts, n_way=3, k_shot=4, n_query=0, shuffle=True)
    batch = src.sample(50)
    partition, cluster = src.decode_classes(batch.classes)
    for t in range(50):
        labels = parts[int(partition[t, 0]), batch.indices[t]].long()
        assert torch.equal(labels, cluster[t][batch.y[t]])
    assert not bool((batch.y == torch.arange(3).repeat_interleave(4)).all())
    assert torch.equal(
        torch.sort(batch.y, dim=1).values, torch.arange(3).repeat_interleave(4).expand(50, -1)
    )
    with pytest.raises(ConfigError, match="n_query=0"):
        CactusTaskSource(image_dataset(n=20), parts, 3, 1, 1, shuffle=True)


def test_cactus_augmented_tasks_keep_the_draw_and_resume():
    """With ``augment`` the tasks hold augmented views of the same examples (same indices and
    pseudo-labels as without it), the draws come from the source's generator (a saved state
    resumes them), and an identity augmentation changes nothing."""
    parts = hand_partitions()
    view = UnlabeledView(image_dataset(n=20))
    aug = Augment.preset("8x8")

    def make(augment=aug):
        return CactusTaskSource(view, parts, 3, 4, 0, seed=3, shuffle=True, augment=augment)

    plain, augmented = make(None).sample(6), make().sample(6)
    assert torch.equal(plain.indices, augmented.indices) and torch.equal(plain.y, augmented.y)
    assert augmented.x.shape == plain.x.shape
    changed = (augmented.x - plain.x).abs().flatten(2).amax(-1) > 1e-3
    assert bool(changed.all())  # every example is a new view, none the stored image
    assert same(make().sample(6), augmented)
    a = make()
    a.sample(2)
    state = a.state_dict()
    expected = a.sample(3)
    b = make()
    b.load_state_dict(state)
    assert same(b.sample(3), expected)
    assert same(make(Augment.preset("identity")).sample(6), plain)


def test_cactus_errors():
    parts = hand_partitions()
    view = image_dataset(n=20)
    with pytest.raises(ConfigError, match="no partition"):
        CactusTaskSource(view, parts, n_way=5, k_shot=2, n_query=2)
    with pytest.raises(DataError, match="index 20 examples"):
        CactusTaskSource(image_dataset(n=21), parts, n_way=2, k_shot=1, n_query=1)
    with pytest.raises(DataError):
        CactusTaskSource(view, parts.float(), n_way=2, k_shot=1, n_query=1)
    with pytest.raises(DataError):
        CactusTaskSource(view, parts - 1, n_way=2, k_shot=1, n_query=1)


# ----------------------------------------------------------------------------- UMTRA


def test_umtra_identity_queries_are_copies_of_the_support():
    view = UnlabeledView(image_dataset(n=30))
    src = UmtraTaskSource(view, n_way=5, n_query=3, augment=Augment(), seed=0)
    batch = src.sample(4)
    assert batch.x.shape == (4, 20, 1, 8, 8) and (batch.k_shot, batch.n_query) == (1, 3)
    assert torch.equal(batch.support_y, torch.arange(5).expand(4, -1))
    assert torch.equal(batch.query_y, torch.arange(5).repeat_interleave(3).expand(4, -1))
    expect = batch.support_x.repeat_interleave(3, dim=1)
    assert torch.equal(batch.query_x, expect)
    assert torch.equal(batch.indices[:, 5:], batch.classes.repeat_interleave(3, dim=1))
    assert torch.equal((batch.support_x[:, :, 0, 0, 0] * 255).round().long(), batch.classes)
    for t in range(4):
        assert batch.classes[t].unique().numel() == 5  # distinct images per task


def test_umtra_queries_are_augmentations_of_the_support():
    view = UnlabeledView(torch.full((30, 1, 8, 8), 0.5))
    noise = Augment(noise_std=0.1, clamp=None)
    batch = UmtraTaskSource(view, n_way=4, n_query=5, augment=noise, seed=0).sample(50)
    diff = batch.query_x - batch.support_x.repeat_interleave(5, dim=1)
    assert abs(float(diff.std()) - 0.1) < 0.01 and abs(float(diff.mean())) < 0.01
    assert torch.equal(batch.support_x, torch.full_like(batch.support_x, 0.5))
    both = UmtraTaskSource(view, 4, 5, augment=noise, seed=0, augment_support=True).sample(5)
    assert not torch.equal(both.support_x, torch.full_like(both.support_x, 0.5))
    shifted = UmtraTaskSource(
        UnlabeledView(image_dataset(n=30)), 3, 2, augment=Augment(translate=0.3), seed=0
    ).sample(2)
    assert not torch.equal(shifted.query_x, shifted.support_x.repeat_interleave(2, dim=1))


def test_umtra_samples_uniformly_among_images():
    src = UmtraTaskSource(torch.rand(10, 2), n_way=3, n_query=0, augment=Augment(), seed=0)
    counts = torch.bincount(src.sample_indices(3000).reshape(-1), minlength=10)
    assert int(counts.min()) > 800 and int(counts.max()) < 1000  # expected 900 each


def test_umtra_determinism_resume_and_errors():
    view = UnlabeledView(image_dataset(n=30))

    def make(seed=0):
        return UmtraTaskSource(view, n_way=5, n_query=2, seed=seed)  # default augmentation

    assert same(make().sample(3), make().sample(3))
    assert not same(make(0).sample(3), make(1).sample(3))
    a = make()
    a.sample(2)
    state = a.state_dict()
    json.dumps({k: v for k, v in state.items() if not isinstance(v, torch.Tensor)})
    expected = a.sample(3)
    b = make()
    b.load_state_dict(state)
    assert same(b.sample(3), expected)
    with pytest.raises(ConfigError):
        UmtraTaskSource(view, n_way=31)
    with pytest.raises(ConfigError):
        make(1).load_state_dict(state)
    with pytest.raises(ConfigError):
        UmtraTaskSource(view, n_way=2, augment="strong")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- spectral graph


def test_knn_indices_match_a_brute_force_search():
    from metaunsup.cluster.graph import knn_indices

    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 5, generator=g)
    got = knn_indices(z, 7)
    u = torch.nn.functional.normalize(z, dim=1)
    sim = u @ u.T
    sim.fill_diagonal_(-float("inf"))
    want = sim.topk(7, dim=1).indices
    assert torch.equal(got, want)


def test_spectral_embedding_separates_what_kmeans_cannot():
    """Two concentric rings (around a common offset so cosine geometry sees them as arcs):
    k-means on the points splits them wrongly, k-means on the spectral embedding of the
    neighbour graph recovers the rings exactly; the embedding is deterministic."""
    from metaunsup.cluster import kmeans
    from metaunsup.cluster.graph import spectral_embedding
    from metaunsup.metrics import clustering_accuracy

    g = torch.Generator().manual_seed(0)
    t = torch.rand(400, generator=g) * 2 * torch.pi
    radius = torch.where(torch.arange(400) < 200, 1.0, 3.0)
    points = torch.stack([radius * t.cos(), radius * t.sin()], 1)
    points = points + 0.05 * torch.randn(400, 2, generator=g)
    z = torch.cat([points, torch.full((400, 1), 10.0)], 1)  # cosine ~ euclidean on the plane
    truth = (torch.arange(400) >= 200).long()[None]
    raw = kmeans(points[None], 2, n_init=10, seed=0).labels
    emb = spectral_embedding(z, 2, n_neighbors=8)
    assert emb.shape == (400, 2) and torch.allclose(emb.norm(dim=1), torch.ones(400))
    spectral = kmeans(emb[None], 2, n_init=10, seed=0).labels
    assert clustering_accuracy(truth, raw).item() < 0.75
    assert clustering_accuracy(truth, spectral).item() == 1.0
    assert torch.equal(emb, spectral_embedding(z, 2, n_neighbors=8))
