"""Forward of osft.torch's target layers: dense reconstruction vs factorised, peak memory and
step time on the CPU (``OSFT(forward="dense" | "factorised")``).

* ``dense``: each forward rebuilds ``W = U_h S_h V_h + U_l S_l V_l`` (``N x M``) per target and
  autograd keeps it (and ``U * S``) for backward;
* ``factorised``: ``y = x V^T diag(S) U^T`` per part, autograd keeps ``x V^T`` (``T x r``).

Cases: a 4096 x 4096 ``nn.Linear`` (float32, frozen ratio 0.5) at several token counts ``T``,
and a small Llama (transformers, random weights from a config) at a few batch shapes. What is
measured is forward + backward (the gradients projected in autograd hooks, as in training); the
optimizer step is the same in both modes and is left out.

Memory: peak resident set size (RSS) of the step above the RSS just before it, from Linux's
``VmHWM`` after resetting it (``echo 5 > /proc/self/clear_refs``) and ``VmRSS``. Why RSS:
PyTorch's CPU allocator has no peak statistics, and tracemalloc sees Python objects only, not
tensor storage; glibc serves these large tensors with ``mmap`` and returns them on free, so RSS
follows the live tensor bytes. Each number is the largest over the timed steps (after one
warm-up step); time is the median step.

For the 4096-wide layer the factors are random orthonormal matrices (QR) in place of the SVD,
which would take minutes on a CPU and does not change the forward's cost; the Llama is
decomposed for real.

Run: OSFT_LIBRARY=target/release/libosft.so bindings/python/.venv/bin/python \\
       benches/forward_memory.py [--steps 5] [--tokens 128,512,2048]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import osft.torch as ot
import osft.torch.decompose as odec


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def random_orthonormal_decompose(g, w, owned, process_group=None):
    """Stand-in for osft.decompose (benchmark of the forward only): random orthonormal
    ``U``, ``V`` and decaying ``S`` of the group's shapes."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for b in range(g.batch):
            q, _ = torch.linalg.qr(torch.randn(g.n, g.r, generator=gen))
            p, _ = torch.linalg.qr(torch.randn(g.m, g.r, generator=gen))
            s = 1.0 / torch.arange(1, g.r + 1, dtype=torch.float32).sqrt()
            g.u_high[b].copy_(q[:, :g.k])
            g.s_high[b].copy_(s[:g.k])
            g.v_high[b].copy_(p[:, :g.k].t())
            if g.mode == "factored":
                g.u_low[b].copy_(q[:, g.k:])
                g.s_low[b].copy_(s[g.k:])
                g.v_low[b].copy_(p[:, g.k:].t())


def step_stats(model, o, batch, loss_fn, steps: int):
    params = o.parameters()
    loss_fn(model, batch).backward()  # warm-up
    peaks, times = [], []
    for _ in range(steps):
        for p in params:
            p.grad = None
        _reset_peak()
        base = _status("VmRSS")
        t0 = time.perf_counter()
        loss_fn(model, batch).backward()
        times.append(time.perf_counter() - t0)
        peaks.append(_status("VmHWM") - base)
    return max(peaks), statistics.median(times)


def linear_case(tokens, steps):
    rows = []
    odec_decompose = odec.decompose_group
    odec.decompose_group = random_orthonormal_decompose
    try:
        for forward in ("dense", "factorised"):
            torch.manual_seed(0)
            m = torch.nn.Sequential(torch.nn.Linear(4096, 4096, bias=False))
            o = ot.OSFT(m, targets=["0"], frozen_ratio=0.5, forward=forward)
            for t in tokens:
                x = torch.randn(t, 4096)
                peak, sec = step_stats(m, o, x, lambda mod, b: mod(b).pow(2).mean(), steps)
                rows.append((f"Linear 4096x4096, T={t}", forward, peak, sec))
            o.merge()
            del m, o
    finally:
        odec.decompose_group = odec_decompose
    return rows


def llama_case(shapes, steps):
    import transformers as T
    rows = []
    cfg = T.LlamaConfig(vocab_size=1000, hidden_size=512, intermediate_size=1376,
                        num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8)
    for forward in ("dense", "factorised"):
        torch.manual_seed(0)
        m = T.LlamaForCausalLM(cfg)
        o = ot.OSFT(m, frozen_ratio=0.5, forward=forward, freeze_others=True)
        for b, t in shapes:
            ids = torch.randint(0, 1000, (b, t), generator=torch.Generator().manual_seed(1))
            peak, sec = step_stats(m, o, ids, lambda mod, x: mod(input_ids=x, labels=x).loss,
                                   steps)
            rows.append((f"Llama 512x4 layers, {b}x{t} tokens", forward, peak, sec))
        del m, o
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--tokens", default="128,512,2048")
    ap.add_argument("--llama", default="1x128,4x256,8x512")
    args = ap.parse_args()
    tokens = [int(t) for t in args.tokens.split(",")]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.llama.split(",")]
    print(f"# {platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}; peak = max over {args.steps} steps of VmHWM - VmRSS "
          "before forward+backward")
    rows = linear_case(tokens, args.steps) + llama_case(shapes, args.steps)
    print("| case | forward | peak forward+backward memory (MiB) | forward+backward time (s) | dense/factorised memory "
          "| dense/factorised time |")
    print("| --- | --- | --- | --- | --- | --- |")
    by = {(c, f): (p, s) for c, f, p, s in rows}
    for c, f, p, s in rows:
        extra = ""
        if f == "factorised":
            dp, ds = by[(c, "dense")]
            extra = f" {dp / p:.2f} | {ds / s:.2f} |"
        else:
            extra = " | |"
        print(f"| {c} | {f} | {p / 2**20:.1f} | {s:.3f} |{extra}", flush=True)


if __name__ == "__main__":
    main()
