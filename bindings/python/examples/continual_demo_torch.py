#!/usr/bin/env python3
"""Continual learning with the osft.torch workflow: the numpy demo's two tasks, in PyTorch, with
Adam. Needs torch (CPU is enough); the numpy-only version is ``continual_demo.py``.

The data and network are those of ``continual_demo.py`` (a shared body of two tanh layers,
24 -> 48 -> 48, biases folded into the weights, and one softmax head per task; tasks A and B on
8-dimensional input subspaces sharing 4 directions). Task A is learnt first, then task B three
ways from the same task-A weights, each with full-batch Adam:

(a) plainly;
(b) ``osft.torch.OSFT(mode="factored")``: every body matrix is decomposed (one osft call per shape
    group), the top-k part frozen, ``U_low, S_low, V_low`` trained, their gradients projected in
    autograd hooks and, through ``OSFTOptimizer``, the Adam update projected and ``U_low``
    retracted;
(c) ``mode="dense"``: constrained full fine-tuning of the dense body weights, gradient and update
    projected on both sides.

It prints task-A loss/accuracy before and after task B and exits non-zero unless both OSFT runs
forget clearly less than plain training (at most half of its accuracy drop) while still learning
task B, with no update component in the frozen subspaces.

    python examples/continual_demo_torch.py [--seed 0] [--ratio 0.5] [--steps 300]
"""

import argparse
import copy
import os
import sys
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import osft  # noqa: E402
import osft.torch as ot  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from continual_demo import N_TEST, N_TRAIN, PRIVATE, SHARED, C, D, H, make_tasks  # noqa: E402

torch.set_num_threads(1)


class Net(nn.Module):
    """Body: two bias-free Linear layers on [x, 1] (bias folded in), tanh; one head per task."""

    def __init__(self, rng):
        super().__init__()
        self.body = nn.ModuleList([nn.Linear(D + 1, H, bias=False), nn.Linear(H + 1, H, bias=False)])
        self.heads = nn.ModuleList([nn.Linear(H + 1, C, bias=False) for _ in range(2)])
        with torch.no_grad():
            for lin in list(self.body) + list(self.heads):
                cols = lin.weight.shape[1]
                lin.weight.copy_(torch.from_numpy(rng.standard_normal(lin.weight.shape) / np.sqrt(cols)))

    def forward(self, x, task):
        one = torch.ones(x.shape[0], 1, dtype=x.dtype)
        h = torch.cat([x, one], 1)
        for lin in self.body:
            h = torch.cat([torch.tanh(lin(h)), one], 1)
        return self.heads[task](h)


def evaluate(net, x, y, task):
    with torch.no_grad():
        z = net(x, task)
        return (float(nn.functional.cross_entropy(z, y)), float((z.argmax(1) == y).double().mean()))


def train(net, params, x, y, task, steps, lr, wrap=None):
    opt = torch.optim.Adam(params, lr=lr)
    if wrap is not None:
        opt = ot.OSFTOptimizer(opt, wrap)        # project the Adam update, retract U_low
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x, task), y).backward()
        opt.step()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ratio", type=float, default=0.5, help="frozen fraction of each rank")
    ap.add_argument("--steps", type=int, default=300, help="Adam steps per task")
    ap.add_argument("--lr", type=float, default=1e-2)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    sample_a, sample_b = make_tasks(rng)

    def tensors(sample, n):
        x, y = sample(n)
        return torch.from_numpy(x), torch.from_numpy(y)

    xa, ya = tensors(sample_a, N_TRAIN)
    xa_test, ya_test = tensors(sample_a, N_TEST)
    xb, yb = tensors(sample_b, N_TRAIN)
    xb_test, yb_test = tensors(sample_b, N_TEST)
    net = Net(rng).double()

    print(f"osft {'.'.join(map(str, osft.version()))} ({osft.library_path}), torch {torch.__version__}")
    print(f"body {D}->{H}->{H} (tanh), {C}-class heads; tasks share {SHARED} of "
          f"{SHARED + PRIVATE} input directions; seed {args.seed}, {args.steps} Adam steps per "
          f"task, lr {args.lr}")

    train(net, list(net.body.parameters()) + list(net.heads[0].parameters()), xa, ya, 0,
          args.steps, args.lr)
    before = evaluate(net, xa_test, ya_test, 0)
    print(f"\nafter task A            task A: loss {before[0]:.3f}  acc {before[1]:.3f}")
    w_a = [lin.weight.detach().clone() for lin in net.body]

    results = {}
    leaks = {}
    for run in ("plain", "factored", "dense"):
        m = copy.deepcopy(net)
        if run == "plain":
            params, o = list(m.body.parameters()), None
        else:
            o = ot.OSFT(m, frozen_ratio=args.ratio, targets=["body.*"], mode=run)
            params = o.parameters()
            if run == "factored":
                print(f"\nOSFT after task A: {o}")
        train(m, params + list(m.heads[1].parameters()), xb, yb, 1, args.steps, args.lr, wrap=o)
        results[run] = (evaluate(m, xa_test, ya_test, 0), evaluate(m, xb_test, yb_test, 1))
        if o is not None:
            # Leakage of the whole task-B change of each body matrix, by osft.leakage.
            dense = o.dense_weights()
            worst = 0.0
            ctx = osft.default_context()
            for i in range(2):
                g, off = next((g, off) for g in o.groups.values() for n, off, _ in g.members
                              if n == f"body.{i}.weight")
                delta = (dense[f"body.{i}.weight"] - w_a[i]).numpy()
                worst = max(worst, osft.leakage(ctx, "left", g.u_high[off].numpy(), delta),
                            osft.leakage(ctx, "right", g.v_high[off].numpy(), delta))
            leaks[run] = worst
            o.merge()

    forget = {}
    for run, label in (("plain", "plain"), ("factored", "OSFT factored"), ("dense", "OSFT dense")):
        (la, aa), (lb, ab) = results[run]
        forget[run] = before[1] - aa
        print(f"after task B, {label:<14} task A: loss {la:.3f}  acc {aa:.3f}   "
              f"task B: loss {lb:.3f}  acc {ab:.3f}")
    print("\nforgetting (task-A accuracy drop): " + ", ".join(
        f"{r} {forget[r]:.3f}" for r in ("plain", "factored", "dense")))
    print("leakage of the task-B change into the frozen subspaces: " + ", ".join(
        f"{r} {leaks[r]:.1e}" for r in ("factored", "dense")))
    print(f"({time.perf_counter() - t0:.1f} s)")

    checks = [("plain training forgets task A (accuracy drop > 0.05)", forget["plain"] > 0.05)]
    for r in ("factored", "dense"):
        checks += [
            (f"OSFT {r} forgets at most half as much as plain training",
             forget[r] <= 0.5 * forget["plain"]),
            (f"OSFT {r} still learns task B (accuracy > 0.8)", results[r][1][1] > 0.8),
            (f"OSFT {r}: no component of the change in the frozen subspaces", leaks[r] < 1e-8),
        ]
    ok = True
    for what, passed in checks:
        print(f"[{'ok' if passed else 'FAIL'}] {what}")
        ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
