"""What matters on a GPU: meta-steps per second against the peers, test-time tasks per second,
peak memory. Run by ``benchmarks/gpu.sh`` (also on the CPU, as a smoke test).

Meta-steps: Conv4-64 with batch norm, 28×28 images (Omniglot background when
``METAUNSUP_DATA`` has it, random images otherwise: the time does not depend on the pixels),
5-way 1-shot, 15 queries, meta-batch ``--meta-batch``, inner step size 0.1, the same weights
and tasks for every implementation. One step = meta-loss + backward (no optimiser step), timed
with ``torch.cuda.synchronize``; median of ``--repeats`` after ``--warmup``; peak memory is the
largest ``torch.cuda.max_memory_allocated`` above the start of the measured steps (on the CPU:
the resident-set peak, see ``peak_memory.py``). Implementations: metaunsup MAML (second order,
1 and 5 inner steps; first order; checkpointed second order, 5 and 20 steps), iMAML (5 steps,
5 CG steps), Prototypical Networks in float32 and under bf16 autocast (on CUDA); ``higher``
and ``learn2learn`` (second order, a loop over tasks) when they can be imported.

Test time: the packaged ``mnist`` Meta-K-means model clusters 10 × 20 tasks of 28×28 images
(``learner.cluster`` on chunks of ``--chunk`` tasks): tasks per second; and MAML adapts on
5-way 1-shot supports and classifies their queries (``fewshot_logits``, 5 steps): tasks per
second.

Run: ``python benchmarks/bench_gpu.py --device cuda [--meta-batch 16] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inner_memory import learn2learn_maml, make_step
from bench_meta_step import K_SHOT, N_QUERY, N_WAY, SIZE, load_images
from metaunsup.learners import MAML, ProtoNet, load_learner
from metaunsup.nets import Conv4
from metaunsup.tasks.batch import TaskBatch
from peak_memory import measure

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def task_batch(x: torch.Tensor, y: torch.Tensor, n_tasks: int, seed: int) -> TaskBatch:
    """``n_tasks`` 5-way 1-shot tasks with 15 queries per class."""
    g = torch.Generator().manual_seed(seed)
    n_classes = int(y.max()) + 1
    per = K_SHOT + N_QUERY
    by_class = [torch.nonzero(y == c).flatten() for c in range(n_classes)]
    xs, cls = [], []
    for _ in range(n_tasks):
        classes = torch.randperm(n_classes, generator=g)[:N_WAY]
        picks = [by_class[c][torch.randperm(len(by_class[c]), generator=g)[:per]] for c in classes]
        support = torch.cat([p[:K_SHOT] for p in picks])
        query = torch.cat([p[K_SHOT:] for p in picks])
        xs.append(x[torch.cat([support, query])])
        cls.append(classes)
    labels = torch.cat(
        [
            torch.arange(N_WAY).repeat_interleave(K_SHOT),
            torch.arange(N_WAY).repeat_interleave(N_QUERY),
        ]
    )
    n = N_WAY * per
    return TaskBatch(
        x=torch.stack(xs),
        y=labels.expand(n_tasks, -1).contiguous(),
        classes=torch.stack(cls),
        indices=torch.zeros(n_tasks, n, dtype=torch.int64),
        n_way=N_WAY,
        k_shot=K_SHOT,
        n_query=N_QUERY,
    )


def timed(step: Callable[[], object], device: str, warmup: int, repeats: int) -> dict:
    """Median milliseconds of ``step`` and the peak memory (MB) of the measured steps."""
    for _ in range(warmup):
        step()
    times: list[float] = []

    def run() -> None:
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times.append(1000 * (time.perf_counter() - t0))

    peak, _, _ = measure(run, device)
    return {"ms": statistics.median(times), "peak_mb": peak}


def meta_steps(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    batch = task_batch(x, y, args.meta_batch, args.seed).to(args.device)
    cases: list[tuple[str, str, int]] = [
        ("metaunsup MAML, 2nd order", "maml", 1),
        ("metaunsup MAML, 2nd order", "maml", 5),
        ("metaunsup MAML, 1st order", "fomaml", 5),
        ("metaunsup MAML, 2nd order, checkpointed", "maml-ckpt", 5),
        ("metaunsup MAML, 2nd order, checkpointed", "maml-ckpt", 20),
        ("metaunsup iMAML (5 CG steps)", "imaml", 5),
        ("higher, 2nd order", "higher", 1),
        ("higher, 2nd order", "higher", 5),
        ("learn2learn, 2nd order", "learn2learn", 1),
        ("learn2learn, 2nd order", "learn2learn", 5),
    ]
    rows = []
    for label, impl, steps in cases:
        if impl == "learn2learn" and learn2learn_maml() is None:
            rows.append({"case": label, "inner_steps": steps, "skipped": "not installed"})
            continue
        if impl == "higher":
            try:
                import higher  # noqa: F401
            except ImportError:
                rows.append({"case": label, "inner_steps": steps, "skipped": "not installed"})
                continue
        torch.manual_seed(args.seed)
        net = Conv4(1, N_WAY, hidden=64, image_size=SIZE, norm="batch").to(args.device)
        step = make_step(impl, steps, net, args.device)
        result = timed(lambda s=step: s(batch), args.device, args.warmup, args.repeats)
        rows.append({"case": label, "inner_steps": steps, **result})
        print(
            f"{label} ({steps}): {result['ms']:.1f} ms, {result['peak_mb']:.0f} MB", file=sys.stderr
        )
    for precision in ("float32", "bf16"):
        label = f"metaunsup ProtoNet, {precision}"
        if precision == "bf16" and not args.device.startswith("cuda"):
            rows.append({"case": label, "inner_steps": 0, "skipped": "bf16 autocast is for CUDA"})
            continue
        torch.manual_seed(args.seed)
        learner = ProtoNet(Conv4(1, None, hidden=64, image_size=SIZE, norm="batch")).to(args.device)

        def proto_step(learner=learner, precision=precision) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss, _ = learner.meta_loss(batch)
            loss.backward()

        result = timed(proto_step, args.device, args.warmup, args.repeats)
        rows.append({"case": label, "inner_steps": 0, **result})
        print(f"{label}: {result['ms']:.1f} ms, {result['peak_mb']:.0f} MB", file=sys.stderr)
    return rows


def test_time(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    rows = []
    learner = load_learner("mnist", args.device)
    g = torch.Generator().manual_seed(args.seed)
    tasks = x[torch.randint(0, len(x), (args.chunk, 200), generator=g)].to(args.device)

    def cluster() -> None:
        with torch.no_grad():
            learner.cluster(tasks, 10, seed=0)

    result = timed(cluster, args.device, 1, max(1, args.repeats // 4))
    rate = args.chunk / (result["ms"] / 1000)
    rows.append({"case": "mnist Meta-K-means, 10 × 20 tasks", "tasks_per_s": rate, **result})
    torch.manual_seed(args.seed)
    maml = MAML(Conv4(1, N_WAY, hidden=64, image_size=SIZE, norm="batch"), 0.4, 1, 5)
    maml = maml.to(args.device).eval()
    batch = task_batch(x, y, args.chunk, args.seed + 1).to(args.device)
    result = timed(lambda: maml.fewshot_logits(batch), args.device, 1, max(1, args.repeats // 4))
    rate = args.chunk / (result["ms"] / 1000)
    rows.append({"case": "MAML 5-way 1-shot, 5 test steps", "tasks_per_s": rate, **result})
    for r in rows:
        print(f"{r['case']}: {r['tasks_per_s']:.0f} tasks/s", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--meta-batch", type=int, default=None, help="default: 16 on CUDA, 4")
    parser.add_argument("--chunk", type=int, default=None, help="test tasks per call (250, 16)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 20 on CUDA, 3")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_gpu.json")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; use --device cpu for a smoke test")
    args.meta_batch = args.meta_batch or (16 if cuda else 4)
    args.chunk = args.chunk or (250 if cuda else 16)
    args.repeats = args.repeats or (20 if cuda else 3)
    torch.set_num_threads(args.threads)
    x, y, source = load_images(args.seed)
    started = time.perf_counter()
    steps = meta_steps(args, x, y)
    tests = test_time(args, x, y)
    record = {
        "benchmark": "bench_gpu",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_gpu.py " + " ".join(argv or sys.argv[1:]),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "data": source,
        "meta_batch": args.meta_batch,
        "repeats": args.repeats,
        "seconds": time.perf_counter() - started,
        "meta_steps": steps,
        "test_time": tests,
    }
    print(table(record))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


def table(record: dict) -> str:
    lines = [
        f"device {record['device']} ({record['device_name']}), meta-batch {record['meta_batch']}",
        "| meta-step | inner steps | ms | steps/s | peak MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in record["meta_steps"]:
        if "skipped" in r:
            lines.append(f"| {r['case']} | {r['inner_steps']} | – | – | {r['skipped']} |")
        else:
            lines.append(
                f"| {r['case']} | {r['inner_steps']} | {r['ms']:.1f} | {1000 / r['ms']:.1f} "
                f"| {r['peak_mb']:.0f} |"
            )
    lines += ["", "| test time | tasks/s | peak MB |", "|---|---:|---:|"]
    lines += [
        f"| {r['case']} | {r['tasks_per_s']:.0f} | {r['peak_mb']:.0f} |"
        for r in record["test_time"]
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
