"""Task samplers, index sampling and class splits (metaunsup.tasks)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from metaunsup.data import Dataset, to_float
from metaunsup.errors import ConfigError
from metaunsup.tasks import (
    ClassIndex,
    ClassSplit,
    ClusteringTaskSampler,
    FewShotTaskSampler,
    TaskBatch,
    classes_with_min_examples,
    split_classes,
)
from metaunsup.tasks.sampling import floyd_sample
from tests.helpers.data import needs_mnist

# Unequal class sizes on purpose: uniform sampling must not depend on them.
COUNTS = (3, 5, 8, 13, 6, 4)


def make_toy(counts=COUNTS, image: bool = False, seed: int = 0) -> Dataset:
    """Examples in shuffled class order; ``x[i]`` encodes ``i`` so gathers can be checked."""
    y = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
    n = len(y)
    if image:
        x = (torch.arange(n) % 256).to(torch.uint8).reshape(n, 1, 1, 1).expand(n, 1, 2, 3)
        x = x.contiguous()
    else:
        x = torch.stack([torch.arange(n, dtype=torch.float32), y.float()], dim=1)
    names = tuple(f"c{i}" for i in range(len(counts)))
    return Dataset(name="toy", split="all", x=x, y=y, classes=names)


@pytest.fixture
def toy() -> Dataset:
    return make_toy()


FIELDS = ("x", "y", "classes", "indices")


def same(a: TaskBatch, b: TaskBatch) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def cat(batches: list[TaskBatch]) -> TaskBatch:
    first = batches[0]
    return TaskBatch(
        **{f: torch.cat([getattr(b, f) for b in batches]) for f in FIELDS},
        n_way=first.n_way,
        k_shot=first.k_shot,
        n_query=first.n_query,
    )


def check_consistent(ds: Dataset, batch: TaskBatch, check_x: bool = True) -> None:
    """Labels, classes, indices and examples tell the same story, with no repeats."""
    assert torch.equal(ds.y[batch.indices], torch.gather(batch.classes, 1, batch.y))
    if check_x:
        assert torch.equal(batch.x, to_float(ds.x[batch.indices]))
    assert bool((torch.sort(batch.classes, dim=1).values.diff(dim=1) > 0).all())
    assert bool((torch.sort(batch.indices, dim=1).values.diff(dim=1) > 0).all())
    per_label = torch.nn.functional.one_hot(batch.y, batch.n_way).sum(dim=1)
    assert bool((per_label == batch.k_shot + batch.n_query).all())


# -- clustering tasks -------------------------------------------------------------------------


def test_clustering_shapes_and_dtypes():
    ds = make_toy(image=True)
    batch = ClusteringTaskSampler(ds, n_way=3, k_shot=2, seed=0).sample(7)
    assert isinstance(batch, TaskBatch)
    assert batch.x.shape == (7, 6, 1, 2, 3) and batch.x.dtype == torch.float32
    assert batch.y.shape == (7, 6) and batch.y.dtype == torch.int64
    assert batch.classes.shape == (7, 3) and batch.classes.dtype == torch.int64
    assert batch.indices.shape == (7, 6) and batch.indices.dtype == torch.int64
    assert (batch.n_way, batch.k_shot, batch.n_query) == (3, 2, 0)
    assert batch.query_x.shape[1] == 0
    assert float(batch.x.max()) <= 1.0
    check_consistent(ds, batch)


def test_clustering_labels_and_distinctness(toy):
    batch = ClusteringTaskSampler(toy, n_way=4, k_shot=3, seed=1).sample(300)
    check_consistent(toy, batch)
    assert int(batch.y.min()) == 0 and int(batch.y.max()) == 3


def test_clustering_order_is_shuffled(toy):
    batch = ClusteringTaskSampler(toy, n_way=3, k_shot=3, seed=2).sample(500)
    sorted_rows = (batch.y[:, 1:] >= batch.y[:, :-1]).all(dim=1)
    assert float(sorted_rows.float().mean()) < 0.05  # 1/1680 by chance
    # The label at each position is uniform over 0..n_way-1.
    for pos in (0, 8):
        freq = torch.bincount(batch.y[:, pos], minlength=3).numpy()
        assert stats.chisquare(freq).pvalue > 1e-3


def test_class_subset_and_dataset_ids(toy):
    sampler = ClusteringTaskSampler(toy, n_way=2, k_shot=3, classes=[5, 2, 3], seed=0)
    batch = sampler.sample(200)
    assert set(batch.classes.unique().tolist()) == {2, 3, 5}
    assert set(toy.y[batch.indices].unique().tolist()) == {2, 3, 5}
    check_consistent(toy, batch)


def test_classes_given_as_tensor_or_numpy(toy):
    a = ClusteringTaskSampler(toy, 2, 2, classes=torch.tensor([1, 3])).sample(5)
    b = ClusteringTaskSampler(toy, 2, 2, classes=np.array([1, 3])).sample(5)
    assert same(a, b)


# -- determinism and chunking ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["clustering", "fewshot"])
def test_same_seed_same_tasks_and_different_seed_different(toy, kind):
    def make(seed):
        if kind == "clustering":
            return ClusteringTaskSampler(toy, 3, 2, seed=seed)
        return FewShotTaskSampler(toy, 3, 1, 2, seed=seed)

    a, b, c = make(5).sample(20), make(5).sample(20), make(6).sample(20)
    assert same(a, b)
    assert not torch.equal(a.indices, c.indices)


def test_reference_tasks_do_not_drift(toy):
    """The first tasks of seed 0, pinned: a change here changes every published evaluation."""
    batch = ClusteringTaskSampler(toy, n_way=2, k_shot=2, seed=0).sample(2)
    assert batch.indices.tolist() == [[18, 14, 16, 5], [22, 25, 0, 20]]
    assert batch.classes.tolist() == [[0, 3], [5, 4]]
    assert batch.y.tolist() == [[0, 1, 0, 1], [0, 0, 1, 1]]


@pytest.mark.parametrize("kind", ["clustering", "fewshot"])
def test_chunks_equal_all_at_once(toy, kind):
    def make():
        if kind == "clustering":
            return ClusteringTaskSampler(toy, 4, 3, seed=3)
        return FewShotTaskSampler(toy, 3, 2, 1, seed=3)

    whole = make().sample(23)
    chunks = list(make().batches(23, batch_size=5))
    assert [len(b) for b in chunks] == [5, 5, 5, 5, 3]
    assert same(cat(chunks), whole)
    s = make()
    assert same(cat([s.sample(1), s.sample(10), s.sample(12)]), whole)


def test_stream_reset_and_resume(toy):
    s = ClusteringTaskSampler(toy, 3, 2, seed=4)
    first = s.sample(6)
    state = s.state_dict()
    nxt = s.sample(6)
    assert not torch.equal(first.indices, nxt.indices)
    assert s.tasks_drawn == 12
    s.reset()
    assert same(s.sample(6), first)
    other = ClusteringTaskSampler(toy, 3, 2, seed=4)
    other.load_state_dict(state)
    assert same(other.sample(6), nxt)
    with pytest.raises(ConfigError, match="seed"):
        ClusteringTaskSampler(toy, 3, 2, seed=5).load_state_dict(state)


def test_iteration_is_endless_in_batch_size(toy):
    s = ClusteringTaskSampler(toy, 2, 2, seed=0, batch_size=3)
    got = list(itertools.islice(iter(s), 4))
    assert [len(b) for b in got] == [3, 3, 3, 3]
    assert same(cat(got), ClusteringTaskSampler(toy, 2, 2, seed=0).sample(12))
    assert list(s.batches(0)) == []


# -- few-shot tasks ----------------------------------------------------------------------------


def test_fewshot_layout(toy):
    n_way, k, q = 3, 2, 3
    ds = make_toy(image=True)
    batch = FewShotTaskSampler(ds, n_way, k, q, seed=0, drop_small=True).sample(50)
    assert batch.x.shape == (50, n_way * (k + q), 1, 2, 3)
    assert batch.support_x.shape[1] == n_way * k and batch.query_x.shape[1] == n_way * q
    way = torch.arange(n_way)
    assert torch.equal(batch.support_y, way.repeat_interleave(k).expand(50, -1))
    assert torch.equal(batch.query_y, way.repeat_interleave(q).expand(50, -1))
    check_consistent(ds, batch)
    support = batch.indices[:, : n_way * k]
    query = batch.indices[:, n_way * k :]
    assert not bool((support.unsqueeze(2) == query.unsqueeze(1)).any())


def test_fewshot_support_only(toy):
    batch = FewShotTaskSampler(toy, 2, 3, 0, seed=0).sample(4)
    assert batch.query_x.shape == (4, 0, 2)
    check_consistent(toy, batch)


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_way": 0}, "n_way must be >= 1"),
        ({"k_shot": 0}, "k_shot must be >= 1"),
        ({"n_way": 7}, "n_way=7 but only 6 classes"),
        ({"n_way": 2.0}, "n_way must be an integer"),
        ({"k_shot": "3"}, "k_shot must be an integer"),
        ({"k_shot": True}, "k_shot must be an integer"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"classes": [0, 6]}, "class id 6 out of range"),
        ({"classes": [1, 1, 2]}, "repeat"),
        ({"classes": [0.0, 1.0]}, "integer class ids"),
        ({"classes": [[0, 1]]}, "one-dimensional"),
        ({"classes": [0, 1], "n_way": 3}, "only 2 classes"),
    ],
)
def test_clustering_config_errors(toy, kwargs, match):
    args = {"n_way": 2, "k_shot": 2} | kwargs
    with pytest.raises(ConfigError, match=match):
        ClusteringTaskSampler(toy, **args)


def test_small_class_is_named_with_its_count(toy):
    with pytest.raises(ConfigError, match=r"class 0 \('c0'\) has 3 examples.*the 4 \(k_shot\)"):
        ClusteringTaskSampler(toy, 2, 4)
    with pytest.raises(ConfigError, match=r"class 5 \('c5'\) has 4 examples.*k_shot \+ n_query"):
        FewShotTaskSampler(toy, 2, 2, 3, classes=[5, 3])
    with pytest.raises(ConfigError, match="n_query must be >= 0"):
        FewShotTaskSampler(toy, 2, 2, -1)


def test_drop_small_classes(toy):
    s = ClusteringTaskSampler(toy, 3, 6, drop_small=True)
    assert s.classes.tolist() == [2, 3, 4]
    assert set(s.sample(50).classes.unique().tolist()) == {2, 3, 4}
    with pytest.raises(ConfigError, match=r"n_way=4 but only 3 classes.*at least 6"):
        ClusteringTaskSampler(toy, 4, 6, drop_small=True)


def test_classes_with_min_examples(toy):
    assert classes_with_min_examples(toy, 6).tolist() == [2, 3, 4]
    assert classes_with_min_examples(toy, 6, classes=[4, 0, 3]).tolist() == [4, 3]
    assert classes_with_min_examples(toy.y, 8).tolist() == [2, 3]
    assert classes_with_min_examples(toy, 0).tolist() == list(range(6))


def test_bad_call_arguments(toy):
    s = ClusteringTaskSampler(toy, 2, 2)
    with pytest.raises(ConfigError, match="n_tasks must be >= 1"):
        s.sample(0)
    with pytest.raises(ConfigError, match="batch_size"):
        s.batches(10, batch_size=0)
    with pytest.raises(ConfigError, match="Dataset"):
        ClusteringTaskSampler(toy.x, 2, 2)  # type: ignore[arg-type]


# -- index sampling internals ------------------------------------------------------------------


def test_class_index_groups_labels():
    y = torch.tensor([2, 0, 2, 5, 0, 2])
    index = ClassIndex.from_labels(y, torch.tensor([2, 5, 3]))
    assert index.counts.tolist() == [3, 1, 0]
    for c, ids in enumerate(index.class_ids.tolist()):
        start, n = int(index.offsets[c]), int(index.counts[c])
        members = index.order[start : start + n].tolist()
        assert members == [i for i, v in enumerate(y.tolist()) if v == ids]
    assert ClassIndex.from_labels(y).counts.tolist() == [2, 0, 3, 0, 0, 1]


def test_floyd_gives_distinct_positions_in_range():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([4, 4, 7, 100, 4000])
    u = torch.rand((5, 4), generator=g, dtype=torch.float64)
    out = floyd_sample(counts, u)
    for row, n in zip(out.tolist(), counts.tolist(), strict=True):
        assert len(set(row)) == 4 and all(0 <= v < n for v in row)
    assert sorted(out[0].tolist()) == [0, 1, 2, 3]  # m == n takes everything


# -- uniformity (seeded, so deterministic; loose thresholds) ------------------------------------


def is_uniform(freq) -> bool:
    """Chi-square goodness of fit against equal frequencies."""
    freq = np.asarray(freq, dtype=float)
    return bool(stats.chisquare(freq).pvalue > 1e-3)


def test_uniformity_check_detects_bias():
    assert not is_uniform([500, 500, 0, 0, 0])  # "always the first examples"
    assert not is_uniform([1100, 900, 1000, 1000])
    assert is_uniform([1010, 990, 1003, 997])


def test_classes_and_examples_are_uniform(toy):
    n_tasks, n_way, k = 6000, 3, 2
    batch = ClusteringTaskSampler(toy, n_way, k, seed=11).sample(n_tasks)
    assert is_uniform(torch.bincount(batch.classes.reshape(-1), minlength=6))
    # Each example of class c appears with probability (n_way / C) * (k / count_c).
    freq = torch.bincount(batch.indices.reshape(-1), minlength=len(toy))
    for c in range(toy.n_classes):
        assert is_uniform(freq[toy.y == c]), f"class {c}: {freq[toy.y == c].tolist()}"


def test_subsets_within_a_class_are_uniform():
    """Every pair of a 5-example class is equally likely (tests the set Floyd returns)."""
    ds = make_toy(counts=(5, 5))
    batch = ClusteringTaskSampler(ds, 2, 2, seed=3).sample(5000)
    members = batch.indices[ds.y[batch.indices] == 0].reshape(-1, 2)
    pairs = torch.sort(members, dim=1).values
    codes = pairs[:, 0] * len(ds) + pairs[:, 1]
    assert is_uniform(torch.unique(codes, return_counts=True)[1])
    assert torch.unique(codes).numel() == 10


def test_support_query_assignment_is_uniform():
    """Which of a class's examples is the support is uniform (Floyd's order alone is not)."""
    ds = make_toy(counts=(3, 3, 3))
    batch = FewShotTaskSampler(ds, 3, 1, 2, seed=4).sample(3000)
    support = batch.indices[:, :3]
    for c in range(3):
        picked = support[batch.classes == c]
        freq = torch.bincount(picked, minlength=len(ds))[ds.y == c]
        assert is_uniform(freq), freq.tolist()
    # The same check fails on Floyd's raw order: its first pick of 3 choose 3 is always 0.
    raw = floyd_sample(torch.full((3000,), 3), torch.rand((3000, 3), dtype=torch.float64))
    assert not is_uniform(torch.bincount(raw[:, 0], minlength=3))


# -- class splits ------------------------------------------------------------------------------


def test_split_classes_disjoint_covering_deterministic():
    split = split_classes(20, seed=1)
    assert isinstance(split, ClassSplit)
    train, val, test = split.parts()
    assert (len(train), len(val), len(test)) == (12, 4, 4)
    everything = torch.cat([train, val, test])
    assert sorted(everything.tolist()) == list(range(20))
    assert all(p.dtype == torch.int64 for p in split.parts())
    again = split_classes(20, seed=1).parts()
    assert all(torch.equal(a, b) for a, b in zip(split.parts(), again, strict=True))
    assert not torch.equal(train, split_classes(20, seed=2).train)


def test_split_rounding_and_counts():
    assert [len(p) for p in split_classes(7).parts()] == [4, 2, 1]
    assert [len(p) for p in split_classes(10, (0.5, 0.5, 0.0)).parts()] == [5, 5, 0]
    sizes = (1200, 100, 323)
    assert tuple(len(p) for p in split_classes(1623, counts=sizes).parts()) == sizes


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((10, (0.5, 0.6, 0.1)), {}, "sum to 1"),
        ((10, (0.5, 0.5)), {}, "three numbers"),
        ((10, (1.2, -0.1, -0.1)), {}, "non-negative"),
        ((3, (0.6, 0.2, 0.2)), {}, "meta-test part of 3 classes empty"),
        ((10,), {"counts": (5, 5, 1)}, "sum to 11"),
        ((10,), {"counts": (5, 5.0, 0)}, "integer"),
        ((0,), {}, "n_classes must be >= 1"),
        ((10,), {"seed": "x"}, "seed must be an integer"),
    ],
)
def test_split_errors(args, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        split_classes(*args, **kwargs)


def test_split_apply(toy):
    split = split_classes(toy.n_classes, counts=(3, 1, 2), seed=0)
    train, val, test = split.apply(toy)
    assert (train.n_classes, val.n_classes, test.n_classes) == (3, 1, 2)
    assert train.split == "all/meta-train" and test.split == "all/meta-test"
    assert len(train) + len(val) + len(test) == len(toy)
    assert train.classes == tuple(toy.classes[i] for i in split.train.tolist())
    batch = ClusteringTaskSampler(test, 2, 3, seed=0).sample(4)
    check_consistent(test, batch)
    with pytest.raises(ConfigError, match="for 10 classes"):
        split_classes(10).apply(toy)


# -- real data ---------------------------------------------------------------------------------


@needs_mnist
def test_mnist_1000_clustering_tasks():
    from metaunsup.data import load

    ds = load("mnist", "test")
    sampler = ClusteringTaskSampler(ds, n_way=10, k_shot=20, seed=0)
    classes, indices, y = ClusteringTaskSampler(ds, 10, 20, seed=0).sample_indices(1000)
    assert indices.shape == (1000, 200)
    done = 0
    for batch in sampler.batches(1000, batch_size=250):  # 157 MB of float32 at a time
        assert batch.x.shape == (250, 200, *ds.example_shape)
        check_consistent(ds, batch, check_x=False)
        assert torch.equal(batch.indices, indices[done : done + 250])
        assert torch.equal(batch.y, y[done : done + 250])
        assert torch.equal(batch.classes, classes[done : done + 250])
        assert torch.equal(batch.x[7], to_float(ds.x[batch.indices[7]]))
        done += 250
    assert done == 1000
