#!/usr/bin/env python3
"""Continual learning with OSFT through osft, on the CPU with numpy alone.

A small multi-head network — a shared body of two tanh layers (24 -> 48 -> 48, biases folded into
the weight matrices as an extra input column) and one softmax head per task — learns task A, then
task B. Both tasks are 5-class problems on 8-dimensional input subspaces that share 4 directions,
so training on B rewrites features that A relies on.

Task B is trained twice from the same task-A weights:

(a) plainly: every body weight gets its full gradient;
(b) with OSFT: after task A, each body matrix W is decomposed with osft (``select_rank`` picks
    ``k`` as a fraction of ``min(N, M)``, ``decompose_np`` splits ``W`` into a frozen top-k part
    ``U_high S_high V_high`` and the rest), and on every step the full gradient is projected on
    both sides away from the frozen subspace, ``G <- (I - U_h U_h^T) G (I - V_h^T V_h)``, by an
    ``osft.Projector``. The momentum buffer only ever sums projected gradients, so the total update
    stays orthogonal to the frozen subspace (checked with ``osft.leakage``).

The script prints task-A loss/accuracy before and after task B for both runs and exits non-zero
unless OSFT forgets clearly less (at most half of plain training's accuracy drop, which must itself
be real) while still learning task B.

    python examples/continual_demo.py [--seed 0] [--ratio 0.5] [--steps 300]
"""

import argparse
import os
import sys
import time

# Tiny matrices: BLAS threads only add overhead (and the machine may be shared).
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

import osft  # noqa: E402

D, H, C = 24, 48, 5          # input dim, hidden width, classes per task
SHARED, PRIVATE = 4, 4       # input directions shared by A and B / private to each
N_TRAIN, N_TEST = 1000, 2000


def make_tasks(rng):
    """Two tasks: inputs in 8-dim subspaces sharing SHARED directions, labels from random linear
    teachers on the subspace coordinates."""
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    sub_a = q[:, :SHARED + PRIVATE]
    sub_b = np.concatenate([q[:, :SHARED], q[:, SHARED + PRIVATE:SHARED + 2 * PRIVATE]], axis=1)

    def task(sub):
        teacher = rng.standard_normal((C, sub.shape[1]))

        def sample(n):
            z = rng.standard_normal((n, sub.shape[1]))
            x = z @ sub.T + 0.05 * rng.standard_normal((n, D))
            return x, np.argmax(z @ teacher.T, axis=1)

        return sample

    return task(sub_a), task(sub_b)


def with_bias(x):
    return np.concatenate([x, np.ones((len(x), 1))], axis=1)


def forward(body, head, x):
    acts = [with_bias(x)]
    for w in body:
        acts.append(with_bias(np.tanh(acts[-1] @ w.T)))
    return acts, acts[-1] @ head.T


def evaluate(body, head, x, y):
    """(mean cross-entropy, accuracy)."""
    z = forward(body, head, x)[1]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), float((z.argmax(axis=1) == y).mean())


def gradients(body, head, x, y):
    acts, z = forward(body, head, x)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    g_head = p.T @ acts[-1]
    d = p @ head[:, :-1]
    g_body = [None] * len(body)
    for i in reversed(range(len(body))):
        d = d * (1.0 - acts[i + 1][:, :-1] ** 2)
        g_body[i] = d.T @ acts[i]
        d = d @ body[i][:, :-1]
    return g_body, g_head


def train(body, head, x, y, steps, lr=0.2, momentum=0.9, projectors=None):
    """Full-batch SGD with momentum; ``projectors[i]`` (if given) projects body gradient i in
    place before it enters the momentum buffer."""
    body = [w.copy() for w in body]
    head = head.copy()
    vel_body = [np.zeros_like(w) for w in body]
    vel_head = np.zeros_like(head)
    for _ in range(steps):
        g_body, g_head = gradients(body, head, x, y)
        for i, g in enumerate(g_body):
            if projectors is not None:
                projectors[i].apply(g)  # in place: G <- (I - U U^T) G (I - V^T V)
            vel_body[i] = momentum * vel_body[i] + g
            body[i] -= lr * vel_body[i]
        vel_head = momentum * vel_head + g_head
        head -= lr * vel_head
    return body, head


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ratio", type=float, default=0.5, help="frozen fraction of each rank")
    ap.add_argument("--steps", type=int, default=300, help="SGD steps per task")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    sample_a, sample_b = make_tasks(rng)
    xa, ya = sample_a(N_TRAIN)
    xa_test, ya_test = sample_a(N_TEST)
    xb, yb = sample_b(N_TRAIN)
    xb_test, yb_test = sample_b(N_TEST)

    def init(rows, cols):
        return rng.standard_normal((rows, cols)) / np.sqrt(cols)

    body0 = [init(H, D + 1), init(H, H + 1)]
    head_a0, head_b0 = init(C, H + 1), init(C, H + 1)

    print(f"osft {'.'.join(map(str, osft.version()))} ({osft.library_path})")
    print(f"body {D}->{H}->{H} (tanh), {C}-class heads; tasks share {SHARED} of "
          f"{SHARED + PRIVATE} input directions; seed {args.seed}, {args.steps} steps per task")

    body_a, head_a = train(body0, head_a0, xa, ya, args.steps)
    before = evaluate(body_a, head_a, xa_test, ya_test)
    print(f"\nafter task A            task A: loss {before[0]:.3f}  acc {before[1]:.3f}")

    # (a) Plain fine-tuning on task B.
    body_p, head_bp = train(body_a, head_b0, xb, yb, args.steps)
    plain_a = evaluate(body_p, head_a, xa_test, ya_test)
    plain_b = evaluate(body_p, head_bp, xb_test, yb_test)

    # (b) OSFT: decompose every body matrix after task A, freeze the top-k subspace.
    leaks = []
    with osft.Context("cpu") as ctx:
        projectors, parts = [], []
        print("\nOSFT decomposition after task A:")
        for i, w in enumerate(body_a):
            s = osft.svd_np(w, ctx=ctx, compute_uv=False)[1]
            k = osft.select_rank(s, "fraction", args.ratio)
            d = osft.decompose_np(w, k, ctx=ctx)
            rec = osft.reconstruction_error(ctx, w, *d)
            orth = max(osft.orthonormality_error(ctx, "left", d.u_high),
                       osft.orthonormality_error(ctx, "right", d.v_high))
            energy = float((s[:k] ** 2).sum() / (s ** 2).sum())
            print(f"  layer {i}: W {w.shape[0]}x{w.shape[1]}, frozen k = {k} of {min(w.shape)} "
                  f"({energy:.1%} of the energy), reconstruction error {rec:.1e}, "
                  f"orthonormality error {orth:.1e}")
            parts.append(d)
            projectors.append(osft.Projector(ctx, "both", d.u_high, d.v_high))
        body_o, head_bo = train(body_a, head_b0, xb, yb, args.steps, projectors=projectors)
        for p in projectors:
            p.close()
        for w0, w1, d in zip(body_a, body_o, parts):
            delta = w1 - w0
            leaks.append(max(osft.leakage(ctx, "left", d.u_high, delta),
                             osft.leakage(ctx, "right", d.v_high, delta)))
    osft_a = evaluate(body_o, head_a, xa_test, ya_test)
    osft_b = evaluate(body_o, head_bo, xb_test, yb_test)

    forget_plain = before[1] - plain_a[1]
    forget_osft = before[1] - osft_a[1]
    print(f"\nafter task B, plain     task A: loss {plain_a[0]:.3f}  acc {plain_a[1]:.3f}   "
          f"task B: loss {plain_b[0]:.3f}  acc {plain_b[1]:.3f}")
    print(f"after task B, OSFT      task A: loss {osft_a[0]:.3f}  acc {osft_a[1]:.3f}   "
          f"task B: loss {osft_b[0]:.3f}  acc {osft_b[1]:.3f}")
    print(f"\nforgetting (task-A accuracy drop): plain {forget_plain:.3f}, OSFT {forget_osft:.3f}")
    print(f"task-A loss increase: plain {plain_a[0] - before[0]:+.3f}, "
          f"OSFT {osft_a[0] - before[0]:+.3f}")
    print(f"leakage of the OSFT update into the frozen subspaces: {max(leaks):.1e}")
    print(f"({time.perf_counter() - t0:.1f} s)")

    checks = [
        ("plain training forgets task A (accuracy drop > 0.05)", forget_plain > 0.05),
        ("OSFT forgets at most half as much as plain training", forget_osft <= 0.5 * forget_plain),
        ("OSFT's task-A loss rises less than plain training's",
         osft_a[0] - before[0] < 0.5 * (plain_a[0] - before[0])),
        ("OSFT still learns task B (accuracy > 0.8)", osft_b[1] > 0.8),
        ("the OSFT update has no component in the frozen subspaces", max(leaks) < 1e-8),
    ]
    ok = True
    for what, passed in checks:
        print(f"[{'ok' if passed else 'FAIL'}] {what}")
        ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
