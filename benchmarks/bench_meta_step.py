"""Meta-training step of MAML: metaunsup against the peer library ``higher`` 0.2.1.

Protocol E of docs/protocols.md: Conv4 with BatchNorm (batch statistics, as in MAML),
28×28 single-channel images (Omniglot background characters when the data is found, random
images otherwise), 5-way 1-shot with 15 query images per class, meta-batch 4, inner SGD with
learning rate 0.4, 1 and 5 inner steps, first and second order. Both libraries start from the
SAME weights and see the SAME tasks.

* peer step: the usual ``higher`` loop, one task at a time::

      for each task:
          with higher.innerloop_ctx(model, SGD(lr=0.4), copy_initial_weights=False,
                                    track_higher_grads=not first_order) as (fmodel, diffopt):
              for _ in range(steps): diffopt.step(cross_entropy(fmodel(xs), ys))
              (cross_entropy(fmodel(xq), yq) / B).backward()

  With ``track_higher_grads=False`` higher detaches the fast weights after every step, so that
  ``backward`` leaves ``θ.grad`` empty; first-order MAML with higher therefore takes the query
  gradient w.r.t. the final fast weights and adds it to ``θ.grad`` (what we compare with).
* our step: one task-batched ``MAML.meta_loss(batch)`` (all 4 tasks in one pass) + ``backward``,
  timed twice: with the CPU kernels (the default: channels-last activations, the first layer as
  one GEMM, closed-form double backwards) and with ``Conv4.cpu_kernels = False`` (the generic
  path: grouped NCHW convolutions and aten's batch norm and pooling, as on other devices).

Before timing, the meta-gradients are compared on ``--grad-batches`` batches: between the two
libraries in float32 (relative L2 difference), for both of our paths, and each library against
the exact meta-gradient computed in float64 (where the two libraries agree to ~1e-12). The two
paths compute the same function; they differ in float32 rounding only. The generic path uses
the peer's kinds of kernels and rounds nearly as it does; the CPU kernels sum in other orders
(channels-last convolutions above all), and five inner steps at learning rate 0.4 amplify such
rounding differences to about 1e-5. The meta-loss is also only piecewise smooth (ReLU,
max-pooling): float32 rounding sometimes flips a kink, in either library, and the gradient of
that batch then differs by up to a few percent; the table shows medians and maxima.

Times are medians over ``--repeats`` steps after ``--warmup`` steps, with the three steps (ours,
our generic path, the peer) interleaved in rotating order so that machine noise hits all alike
(wall time, and process CPU time, which is less sensitive to other processes on a shared
machine). Optimiser steps are excluded (both would do the same ``Adam.step``). ``--threads``
sets ``torch.set_num_threads`` for all; on a machine shared with other busy processes,
``OMP_WAIT_POLICY=PASSIVE`` avoids OpenMP spin-waiting that slows multi-threaded runs of both
libraries by large factors.

Run: ``python benchmarks/bench_meta_step.py [--threads 2] [--repeats 30] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from metaunsup.learners import MAML
from metaunsup.nets import Conv4
from metaunsup.tasks.batch import TaskBatch

N_WAY, K_SHOT, N_QUERY, META_BATCH, INNER_LR, SIZE = 5, 1, 15, 4, 0.4, 28


def peer_model(ours: Conv4) -> nn.Sequential:
    """A plain ``nn.Sequential`` Conv4 holding a copy of ``ours``'s weights."""
    layers: list[nn.Module] = []
    cin = ours.in_channels
    for block in ours.blocks:
        layers += [
            nn.Conv2d(cin, ours.hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(ours.hidden, track_running_stats=False),
            nn.ReLU(),
        ]
        if block.pool:
            layers.append(nn.MaxPool2d(2))
        cin = ours.hidden
    layers += [nn.Flatten(), nn.Linear(ours.feature_dim, N_WAY)]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for p, q in zip(model.parameters(), ours.parameters(), strict=True):
            p.copy_(q)
    return model


def load_images(seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``[n, 1, 28, 28]`` float images and labels: Omniglot background if found, else random."""
    try:
        from metaunsup.data import load, to_float

        shared = Path(__file__).resolve().parents[2] / "shared" / "datasets"
        root = None if os.environ.get("METAUNSUP_DATA") or not shared.is_dir() else shared
        ds = load("omniglot", "background", root=root)
        x = to_float(ds.x)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if tuple(x.shape[-2:]) != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="area")
        return x, ds.y, "omniglot/background"
    except Exception as err:  # data or loader absent: the timing does not depend on pixels
        g = torch.Generator().manual_seed(seed)
        n_classes = 100
        x = torch.rand(n_classes * 20, 1, SIZE, SIZE, generator=g)
        y = torch.arange(n_classes).repeat_interleave(20)
        return x, y, f"random (omniglot unavailable: {type(err).__name__})"


def sample_batch(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> TaskBatch:
    """``META_BATCH`` tasks of 5-way 1-shot + 15 query images per class."""
    n_classes = int(y.max()) + 1
    xs, ys, cls = [], [], []
    per = K_SHOT + N_QUERY
    for _ in range(META_BATCH):
        classes = torch.randperm(n_classes, generator=g)[:N_WAY]
        support, query = [], []
        for c in classes.tolist():
            idx = torch.nonzero(y == c).flatten()
            pick = idx[torch.randperm(len(idx), generator=g)[:per]]
            support.append(x[pick[:K_SHOT]])
            query.append(x[pick[K_SHOT:]])
        xs.append(torch.cat(support + query))
        ys.append(
            torch.cat(
                [
                    torch.arange(N_WAY).repeat_interleave(K_SHOT),
                    torch.arange(N_WAY).repeat_interleave(N_QUERY),
                ]
            )
        )
        cls.append(classes)
    n = N_WAY * per
    return TaskBatch(
        x=torch.stack(xs).contiguous(),
        y=torch.stack(ys),
        classes=torch.stack(cls),
        indices=torch.zeros(META_BATCH, n, dtype=torch.int64),
        n_way=N_WAY,
        k_shot=K_SHOT,
        n_query=N_QUERY,
    )


def peer_step(model: nn.Module, batch: TaskBatch, steps: int, first_order: bool) -> None:
    """The usual higher MAML step (see the module docstring); leaves grads in ``model``."""
    import higher

    inner_opt = torch.optim.SGD(model.parameters(), lr=INNER_LR)
    B = batch.n_tasks
    sx, sy, qx, qy = batch.support_x, batch.support_y, batch.query_x, batch.query_y
    for t in range(B):
        with higher.innerloop_ctx(
            model, inner_opt, copy_initial_weights=False, track_higher_grads=not first_order
        ) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fmodel(sx[t]), sy[t]))
            qloss = F.cross_entropy(fmodel(qx[t]), qy[t]) / B
            if not first_order:
                qloss.backward()
                continue
            grads = torch.autograd.grad(qloss, list(fmodel.parameters()))
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.detach().clone() if p.grad is None else p.grad + g


def our_step(learner: MAML, batch: TaskBatch) -> None:
    loss, _ = learner.meta_loss(batch)
    loss.backward()


def grads_of(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters()])


def zero(module: nn.Module) -> None:
    for p in module.parameters():
        p.grad = None


def naive_first_order_grad_is_empty(model: nn.Module, batch: TaskBatch) -> bool:
    """Whether ``loss.backward()`` under ``track_higher_grads=False`` leaves ``θ.grad`` unset."""
    import higher

    zero(model)
    inner_opt = torch.optim.SGD(model.parameters(), lr=INNER_LR)
    with higher.innerloop_ctx(
        model, inner_opt, copy_initial_weights=False, track_higher_grads=False
    ) as (fmodel, diffopt):
        diffopt.step(F.cross_entropy(fmodel(batch.support_x[0]), batch.support_y[0]))
        loss = F.cross_entropy(fmodel(batch.query_x[0]), batch.query_y[0])
        if loss.requires_grad:
            loss.backward()
    empty = all(p.grad is None for p in model.parameters())
    zero(model)
    return empty


def _grads_f64(learner: MAML, model: nn.Module, batch: TaskBatch, steps: int, first_order: bool):
    """Both libraries' meta-gradients in float64 (the exact reference), then back to float32."""
    b64 = TaskBatch(
        x=batch.x.double(),
        y=batch.y,
        classes=batch.classes,
        indices=batch.indices,
        n_way=batch.n_way,
        k_shot=batch.k_shot,
        n_query=batch.n_query,
    )
    learner.double()
    model.double()
    try:
        zero(learner)
        our_step(learner, b64)
        ours = grads_of(learner)
        zero(model)
        peer_step(model, b64, steps, first_order)
        peer = grads_of(model)
    finally:
        learner.float()
        model.float()
    return ours, peer


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def run_case(
    steps: int,
    first_order: bool,
    batches: list[TaskBatch],
    warmup: int,
    repeats: int,
    seed: int,
    grad_batches: int,
) -> dict:
    torch.manual_seed(seed)
    net = Conv4(in_channels=1, n_way=N_WAY, hidden=64, image_size=SIZE, norm="batch")
    learner = MAML(net, inner_lr=INNER_LR, inner_steps=steps, first_order=first_order)
    model = peer_model(net)

    def step(which: str, batch: TaskBatch) -> None:
        if which == "peer":
            zero(model)
            peer_step(model, batch, steps, first_order)
            return
        net.cpu_kernels = which == "ours"
        zero(learner)
        our_step(learner, batch)

    # Same weights, same data: compare the meta-gradients in float32, and each library's
    # float32 gradient with the exact one (float64; both libraries agree there to ~1e-12).
    diffs, diffs_generic, err_ours, err_peer, diffs64 = [], [], [], [], []
    for batch in batches[:grad_batches]:
        step("ours", batch)
        g_ours = grads_of(learner)
        step("generic", batch)
        g_generic = grads_of(learner)
        net.cpu_kernels = True
        step("peer", batch)
        g_peer = grads_of(model)
        g_ours64, g_peer64 = _grads_f64(learner, model, batch, steps, first_order)
        diffs.append(rel(g_ours, g_peer))
        diffs_generic.append(rel(g_generic, g_peer))
        diffs64.append(rel(g_ours64, g_peer64))
        err_ours.append(rel(g_ours, g_peer64))
        err_peer.append(rel(g_peer, g_peer64))

    names = ("ours", "generic", "peer")
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for i in range(warmup + repeats):
        batch = batches[i % len(batches)]
        for j in range(len(names)):  # rotate the order so that drifts hit all three alike
            which = names[(i + j) % len(names)]
            w0, c0 = time.perf_counter(), time.process_time()
            step(which, batch)
            w1, c1 = time.perf_counter(), time.process_time()
            if i >= warmup:
                wall[which].append((w1 - w0) * 1e3)
                cpu[which].append((c1 - c0) * 1e3)
    net.cpu_kernels = True
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "inner_steps": steps,
        "order": "first" if first_order else "second",
        "grad_rel_diff_f32_median": statistics.median(diffs),
        "grad_rel_diff_f32_max": max(diffs),
        "grad_rel_diff_f32_batches": diffs,
        "generic_grad_rel_diff_f32_median": statistics.median(diffs_generic),
        "generic_grad_rel_diff_f32_max": max(diffs_generic),
        "generic_grad_rel_diff_f32_batches": diffs_generic,
        "grad_rel_diff_f64_max": max(diffs64),
        "ours_f32_error_vs_f64_batches": err_ours,
        "peer_f32_error_vs_f64_batches": err_peer,
        "ours_f32_error_vs_f64_median": statistics.median(err_ours),
        "peer_f32_error_vs_f64_median": statistics.median(err_peer),
        "peer_ms_median": med["peer"],
        "ours_ms_median": med["ours"],
        "generic_ms_median": med["generic"],
        "speedup": med["peer"] / med["ours"],
        "generic_speedup": med["peer"] / med["generic"],
        "peer_cpu_ms_median": med_cpu["peer"],
        "ours_cpu_ms_median": med_cpu["ours"],
        "generic_cpu_ms_median": med_cpu["generic"],
        "speedup_cpu_time": med_cpu["peer"] / med_cpu["ours"],
        "peer_ms": wall["peer"],
        "ours_ms": wall["ours"],
        "generic_ms": wall["generic"],
        "peer_cpu_ms": cpu["peer"],
        "ours_cpu_ms": cpu["ours"],
        "generic_cpu_ms": cpu["generic"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--orders", nargs="+", default=["second", "first"])
    parser.add_argument(
        "--grad-batches", type=int, default=4, help="batches on which gradients are compared"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "bench_meta_step.json",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import higher

    x, y, source = load_images(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    batches = [sample_batch(x, y, g) for _ in range(8)]
    rows = []
    for steps in args.steps:
        for order in args.orders:
            rows.append(
                run_case(
                    steps,
                    order == "first",
                    batches,
                    args.warmup,
                    args.repeats,
                    args.seed,
                    args.grad_batches,
                )
            )
    naive_empty = naive_first_order_grad_is_empty(
        peer_model(Conv4(1, N_WAY, 64, SIZE, "batch")), batches[0]
    )

    lines = [
        "| inner steps | order | higher 0.2.1 (ms) | metaunsup (ms) | speed-up (wall) "
        "| speed-up (CPU time) | f32 grad. rel. diff ours↔peer: median (max) "
        "| generic path (ms) | its speed-up | its f32 diff ↔ peer: median (max) "
        "| f32 error vs exact f64, ours / peer: median (max) | f64 ours↔peer (max) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        eo, ep = r["ours_f32_error_vs_f64_batches"], r["peer_f32_error_vs_f64_batches"]
        lines.append(
            f"| {r['inner_steps']} | {r['order']} | {r['peer_ms_median']:.1f} | "
            f"{r['ours_ms_median']:.1f} | {r['speedup']:.2f}× | {r['speedup_cpu_time']:.2f}× | "
            f"{r['grad_rel_diff_f32_median']:.1e} ({r['grad_rel_diff_f32_max']:.1e}) | "
            f"{r['generic_ms_median']:.1f} | {r['generic_speedup']:.2f}× | "
            f"{r['generic_grad_rel_diff_f32_median']:.1e} "
            f"({r['generic_grad_rel_diff_f32_max']:.1e}) | "
            f"{statistics.median(eo):.1e} ({max(eo):.1e}) / "
            f"{statistics.median(ep):.1e} ({max(ep):.1e}) | {r['grad_rel_diff_f64_max']:.1e} |"
        )
    table = "\n".join(lines)
    print(table)
    print(
        f"\nmedians of {args.repeats} steps after {args.warmup} warm-up, the three interleaved; "
        f"{args.threads} threads; data: {source}; gradients compared on {args.grad_batches} "
        "batches. ReLU and max-pooling make the meta-loss piecewise smooth: float32 rounding "
        "occasionally flips a kink, in either library, which is what the maxima show.\n"
        f"higher's first-order loss.backward() leaves θ.grad empty: {naive_empty}"
    )
    result = {
        "benchmark": "bench_meta_step",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "torch": torch.__version__,
        "higher": getattr(higher, "__version__", "0.2.1"),
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "data": source,
        "setting": {
            "net": "conv4-64 batchnorm",
            "image": [1, SIZE, SIZE],
            "n_way": N_WAY,
            "k_shot": K_SHOT,
            "n_query": N_QUERY,
            "meta_batch": META_BATCH,
            "inner_lr": INNER_LR,
        },
        "peer_first_order_backward_leaves_grad_empty": naive_empty,
        "rows": rows,
        "table": table,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
