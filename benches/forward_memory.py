"""Forward of osft.torch's target layers: dense reconstruction, factorised, and the per-call
choice between them; peak memory and step time on the CPU
(``OSFT(forward="dense" | "factorised" | "auto")``).

* ``dense``: each forward rebuilds ``W = U_h S_h V_h + U_l S_l V_l`` (``N x M``) per target and
  autograd keeps it (and ``U * S``) for backward;
* ``factorised``: ``y = x V^T diag(S) U^T`` per part, autograd keeps ``x V_low^T`` (``T x r``);
* ``auto``: factorised when that keeps fewer bytes for backward (``2 T (R-k) < N M + N (R-k)``),
  else dense, per call.

Cases: a 4096 x 4096 ``nn.Linear`` (float32, frozen ratio 0.5) at several token counts ``T``,
and a small Llama (transformers, random weights from a config) at a few batch shapes. What is
measured is forward + backward, without the gradient projection and the optimizer step (see
Time below).

Memory, two measures:

* ``saved``: bytes of the tensors autograd keeps for backward (``saved_tensors_hooks``, unique
  storages, parameters and buffers excluded), exact and deterministic: the difference between
  the two forwards is what they save;
* ``peak``: peak resident set size (RSS) of forward + backward above the RSS just before it,
  from Linux's ``VmHWM`` after resetting it (``echo 5 > /proc/self/clear_refs``) and ``VmRSS``.
  Why RSS: PyTorch's CPU allocator keeps no peak statistics and tracemalloc sees Python objects
  only, not tensor storage. The script re-executes itself with ``MALLOC_MMAP_THRESHOLD_=65536``
  so that glibc serves every tensor of 64 KiB or more with ``mmap`` and unmaps it on free
  (without it glibc's adaptive threshold keeps freed blocks in the heap and the RSS no longer
  follows the live bytes). The largest over the steps.

Time: the median forward + backward over the steps (the first includes first-touch costs; with
``--steps 1`` it is all there is). The gradient projection (``project_in_backward``) and the
optimizer step cost the same in every mode and are left out (``project_in_backward=False``).

For the 4096-wide layer the factors are random orthonormal matrices (QR) in place of the SVD,
which would take minutes on a CPU and does not change the forward's cost; the Llama is
decomposed for real.

Run: OSFT_LIBRARY=target/release/libosft.so bindings/python/.venv/bin/python \\
       benches/forward_memory.py [--steps 2] [--tokens 256,8192] [--llama 1x256,4x1024]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

import osft.torch as ot
import osft.torch.decompose as odec

FORWARDS = ("dense", "factorised", "auto")


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
    """``steps`` forward + backward passes: the bytes autograd saved in the forward (parameters
    and buffers excluded; the same in every pass), the largest peak RSS, the median time."""
    params = o.parameters()
    own = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    saved: dict = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in own:
            saved[st.data_ptr()] = st.nbytes()
        return t

    peaks, times = [], []
    for _ in range(steps):
        for p in params:
            p.grad = None
        saved.clear()
        _reset_peak()
        base = _status("VmRSS")
        t0 = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model, batch)
        loss.backward()
        times.append(time.perf_counter() - t0)
        peaks.append(_status("VmHWM") - base)
        del loss
    return sum(saved.values()), max(peaks), statistics.median(times)


def linear_case(tokens, steps):
    rows = []
    odec_decompose = odec.decompose_group
    odec.decompose_group = random_orthonormal_decompose
    try:
        for forward in FORWARDS:
            torch.manual_seed(0)
            m = torch.nn.Sequential(torch.nn.Linear(4096, 4096, bias=False))
            o = ot.OSFT(m, targets=["0"], frozen_ratio=0.5, forward=forward,
                        project_in_backward=False)
            for t in tokens:
                # requires_grad: the layer's input comes from earlier layers, as in a model
                # (else autograd would not keep W for the input's gradient).
                x = torch.randn(t, 4096, requires_grad=True)
                rows.append((f"Linear 4096x4096, T={t}", forward)
                            + step_stats(m, o, x, lambda mod, b: mod(b).pow(2).mean(), steps))
                print("#", rows[-1], flush=True)
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
    for forward in FORWARDS:
        torch.manual_seed(0)
        m = T.LlamaForCausalLM(cfg)
        o = ot.OSFT(m, frozen_ratio=0.5, forward=forward, freeze_others=True,
                    project_in_backward=False)
        for b, t in shapes:
            ids = torch.randint(0, 1000, (b, t), generator=torch.Generator().manual_seed(1))
            rows.append((f"Llama 512 wide, 4 layers, {b}x{t} tokens", forward)
                        + step_stats(m, o, ids, lambda mod, x: mod(input_ids=x, labels=x).loss,
                                     steps))
            print("#", rows[-1], flush=True)
        del m, o
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--tokens", default="256,8192")
    ap.add_argument("--llama", default="1x256,4x1024")
    args = ap.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":  # see the module docstring
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    tokens = [int(t) for t in args.tokens.split(",")]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.llama.split(",")]
    print(f"# {platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}; peak = max over "
          f"{args.steps} steps of VmHWM - VmRSS before forward+backward")
    rows = linear_case(tokens, args.steps) + llama_case(shapes, args.steps)
    print("| case | forward | saved for backward (MiB) | peak RSS (MiB) | time (s) | dense / "
          "this: saved, peak, time |")
    print("| --- | --- | --- | --- | --- | --- |")
    by = {(c, f): (sv, p, s) for c, f, sv, p, s in rows}
    order = sorted(rows, key=lambda r: ([c for c, *_ in rows].index(r[0]), FORWARDS.index(r[1])))
    for c, f, sv, p, s in order:
        extra = ""
        if f != "dense":
            dsv, dp, ds = by[(c, "dense")]
            extra = f"{dsv / max(sv, 1):.2f}, {dp / max(p, 1):.2f}, {ds / s:.2f}"
        print(f"| {c} | {f} | {sv / 2**20:.1f} | {p / 2**20:.1f} | {s:.3f} | {extra} |",
              flush=True)


if __name__ == "__main__":
    main()
