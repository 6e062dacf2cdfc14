#!/usr/bin/env python3
"""GPU side-by-side of osft (CUDA executor, through the Python binding on PyTorch tensors)
against what OSFT users run today in PyTorch, in one process, on one GPU, on the very same
random inputs: the measurements of the GPU validation issue.

1. Projection step of every OSFT target matrix of Llama-3.1-8B (32 layers x q, k, v, o, gate,
   up, down = 224 matrices; rank ratio 0.5: k = R/2 frozen, R - k trainable), bf16 gradients of
   the trainable factors dU_low (N x lo) and dV_low (lo x M), f32 accumulation:
     * "torch loop": mini_trainer's per-parameter projection, one `torch.mm` and one `addmm_`
       per side per matrix (dU -= U_h (U_h^T dU); dV -= (dV V_h^T) V_h);
     * "cuBLAS bound": the same two GEMMs per side as one `torch.bmm` / `baddbmm_` per shape
       group (cuBLAS strided-batched GEMM on exactly the shapes osft runs) — the yardstick for
       "fraction of what cuBLAS GEMM reaches on the same shapes";
     * "osft": one `osft.project` call per shape group and side (14 calls a step), on PyTorch's
       current stream, with a caller workspace (no allocation in the timed loop).
   Figures: median ms per step (CUDA events around whole steps, warm-up first), TFLOP/s
   (4 N lo k + 4 lo M k flops per matrix), ratios torch/osft and osft/cuBLAS. Results are checked:
   osft's projected gradients against a float64 reference on a sample, and leakage
   ||U_h^T dU|| / ||dU|| after projection.
2. Decomposition (SVD + split at k, f32) of the target matrices of --svd-layers layers (all 224
   with --svd-layers 32; the default 1 layer keeps the run short, the whole-model time is
   extrapolated x32 and marked so): a `torch.linalg.svd(full_matrices=False)` loop against
   `osft.decompose`, one call per shape group; relative reconstruction error
   ||W - U S V|| / ||W|| and orthonormality max |U^T U - I|, |V V^T - I| for both.
3. Randomized top-k (U_high, S_high, V_high only) against the full SVD, where the binding offers
   an SVD-algorithm override (`Context.svd_algorithm`): time and the error of the top-k
   reconstruction relative to the exact top-k one.

Run on the GPU machine (see scripts/device-check.sh bench):
    OSFT_LIBRARY=target/device-check/libosft.so PYTHONPATH=bindings/python \
        python3 benches/gpu_compare.py --json OUT.json
A dry run of the script logic on the CPU (torch CPU build, osft CPU executor, shapes / 32):
    python benches/gpu_compare.py --device cpu --scale 32 --layers 2 --iters 3
"""

import argparse
import json
import math
import statistics
import sys
import time

LLAMA_31_8B = [  # name, N (out features), M (in features)
    ("q_proj", 4096, 4096),
    ("k_proj", 1024, 4096),
    ("v_proj", 1024, 4096),
    ("o_proj", 4096, 4096),
    ("gate_proj", 14336, 4096),
    ("up_proj", 14336, 4096),
    ("down_proj", 4096, 14336),
]


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--layers", type=int, default=32, help="layers in the projection step (32: the whole model)")
    p.add_argument("--svd-layers", type=int, default=1, help="layers decomposed (32: all 224 matrices)")
    p.add_argument("--scale", type=int, default=1, help="divide every dimension (dry runs)")
    p.add_argument("--rank-ratio", type=float, default=0.5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--skip-svd", action="store_true")
    p.add_argument("--json", help="write the results here")
    return p.parse_args()


class Timer:
    """Wall time of a callable: CUDA events on the current stream, or perf_counter on the CPU."""

    def __init__(self, torch, device):
        self.torch, self.cuda = torch, device.type == "cuda"

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def once(self, f):
        if self.cuda:
            a, b = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
            a.record()
            f()
            b.record()
            b.synchronize()
            return a.elapsed_time(b) / 1e3
        t = time.perf_counter()
        f()
        return time.perf_counter() - t

    def median(self, f, warmup, iters):
        for _ in range(warmup):
            f()
        self.sync()
        return statistics.median(self.once(f) for _ in range(iters))


def orthonormal(torch, batch, n, k, device, gen):
    """A batch of n x k matrices with orthonormal columns (QR of a Gaussian, in f32)."""
    q, _ = torch.linalg.qr(torch.randn(batch, n, k, device=device, generator=gen))
    return q


def projection(torch, osft, ctx, args, device, timer, gen):
    bf16 = torch.bfloat16
    groups = []
    for name, n, m in LLAMA_31_8B:
        n, m = n // args.scale, m // args.scale
        r = min(n, m)
        k = int(round(args.rank_ratio * r))
        lo = r - k
        L = args.layers
        g = {"name": name, "n": n, "m": m, "k": k, "lo": lo, "count": L}
        g["uh"] = orthonormal(torch, L, n, k, device, gen).to(bf16)
        # k x M, rows orthonormal
        g["vh"] = orthonormal(torch, L, m, k, device, gen).transpose(1, 2).contiguous().to(bf16)
        g["du0"] = torch.randn(L, n, lo, device=device, generator=gen).to(bf16)
        g["dv0"] = torch.randn(L, lo, m, device=device, generator=gen).to(bf16)
        g["du"], g["dv"] = g["du0"].clone(), g["dv0"].clone()
        groups.append(g)
    flops = sum(g["count"] * (4 * g["n"] * g["lo"] * g["k"] + 4 * g["lo"] * g["m"] * g["k"]) for g in groups)

    # The torch loop of the peers: per parameter, per side, mm then addmm_.
    def torch_loop():
        for g in groups:
            for i in range(g["count"]):
                uh, du, vh, dv = g["uh"][i], g["du"][i], g["vh"][i], g["dv"][i]
                du.addmm_(uh, torch.mm(uh.t(), du), alpha=-1)
                dv.addmm_(torch.mm(dv, vh.t()), vh, alpha=-1)

    # cuBLAS strided-batched GEMM on the same shapes: the yardstick.
    def cublas_bound():
        for g in groups:
            g["du"].baddbmm_(g["uh"], torch.bmm(g["uh"].transpose(1, 2), g["du"]), alpha=-1)
            g["dv"].baddbmm_(torch.bmm(g["dv"], g["vh"].transpose(1, 2)), g["vh"], alpha=-1)

    ws = 0
    for g in groups:
        ws = max(ws, osft.project_workspace_size(ctx, "left", g["du"], g["uh"]),
                 osft.project_workspace_size(ctx, "right", g["dv"], None, g["vh"]))
    workspace = torch.empty(max(ws // 4 + 64, 1), dtype=torch.float32, device=device)
    ctx.set_workspace(workspace)

    def osft_step():
        for g in groups:
            osft.project(ctx, "left", g["du"], g["uh"])
            osft.project(ctx, "right", g["dv"], None, g["vh"])

    # Correctness first, on fresh gradients: osft against a float64 reference, and leakage.
    osft_step()
    timer.sync()
    worst, leak = 0.0, 0.0
    for g in groups:
        for i in sorted({0, g["count"] - 1}):
            uh, vh = g["uh"][i].double(), g["vh"][i].double()
            du0, dv0 = g["du0"][i].double(), g["dv0"][i].double()
            ref_u = du0 - uh @ (uh.t() @ du0)
            ref_v = dv0 - (dv0 @ vh.t()) @ vh
            for got, ref, x0 in ((g["du"][i].double(), ref_u, du0), (g["dv"][i].double(), ref_v, dv0)):
                worst = max(worst, float((got - ref).norm() / x0.norm()))
            leak = max(leak, float((uh.t() @ g["du"][i].double()).norm() / g["du"][i].double().norm()),
                       float((g["dv"][i].double() @ vh.t()).norm() / g["dv"][i].double().norm()))

    rows = {}
    # Alternate the three in rounds so that drift of a shared machine hits all alike.
    samples = {"torch loop": [], "cuBLAS bound": [], "osft": []}
    fns = {"torch loop": torch_loop, "cuBLAS bound": cublas_bound, "osft": osft_step}
    rounds = 3
    for _ in range(rounds):
        for name, f in fns.items():
            samples[name].append(timer.median(f, args.warmup, max(1, args.iters // rounds)))
    for name, s in samples.items():
        t = statistics.median(s)
        rows[name] = {"ms": t * 1e3, "tflops": flops / t / 1e12}
    ctx.release_workspace()
    return {
        "matrices": sum(g["count"] for g in groups),
        "flops_per_step": flops,
        "rows": rows,
        "speedup_vs_torch_loop": rows["torch loop"]["ms"] / rows["osft"]["ms"],
        "fraction_of_cublas": rows["cuBLAS bound"]["ms"] / rows["osft"]["ms"],
        "max_rel_error_vs_f64": worst,
        "max_leakage": leak,
        "workspace_bytes": ws,
    }


def svd_errors(torch, w, u, s, v):
    """Relative reconstruction error and orthonormality error, in float64."""
    w, u, s, v = w.double(), u.double(), s.double(), v.double()
    rec = float((w - (u * s.unsqueeze(-2)) @ v).norm() / w.norm())
    eye_u = torch.eye(u.shape[-1], dtype=torch.float64, device=u.device)
    eye_v = torch.eye(v.shape[-2], dtype=torch.float64, device=v.device)
    orth = max(float((u.transpose(-1, -2) @ u - eye_u).abs().max()),
               float((v @ v.transpose(-1, -2) - eye_v).abs().max()))
    return rec, orth


def decomposition(torch, osft, ctx, args, device, timer, gen):
    L = args.svd_layers
    groups = []
    for name, n, m in LLAMA_31_8B:
        n, m = n // args.scale, m // args.scale
        r = min(n, m)
        k = int(round(args.rank_ratio * r))
        w = torch.randn(L, n, m, device=device, generator=gen)
        groups.append({"name": name, "n": n, "m": m, "r": r, "k": k, "w": w})

    def torch_loop():
        out = []
        for g in groups:
            for i in range(L):
                out.append(torch.linalg.svd(g["w"][i], full_matrices=False))
        return out

    f32 = torch.float32

    def alloc(g):
        n, m, r, k = g["n"], g["m"], g["r"], g["k"]
        e = lambda *s: torch.empty(L, *s, dtype=f32, device=device)  # noqa: E731
        return e(n, k), e(k), e(k, m), e(n, r - k), e(r - k), e(r - k, m)

    parts = [alloc(g) for g in groups]
    ws = max(osft.decompose_workspace_size(ctx, g["w"]) for g in groups)
    workspace = torch.empty(max(ws // 4 + 64, 1), dtype=f32, device=device)
    ctx.set_workspace(workspace)

    def osft_all():
        for g, p in zip(groups, parts):
            osft.decompose(ctx, g["w"], g["k"], *p)

    res = {"layers": L, "matrices": L * len(groups), "workspace_bytes": ws}
    # One warm-up each (cuSOLVER handles, NVRTC, torch's lazy init), then one timed run each:
    # whole-model decomposition is a once-per-task cost.
    t_torch_res = torch_loop()
    osft_all()
    t_torch = timer.once(torch_loop)
    t_osft = timer.once(osft_all)
    res["torch_s"], res["osft_s"] = t_torch, t_osft
    res["speedup"] = t_torch / t_osft
    res["extrapolated_to_32_layers"] = L != 32
    if L != 32:
        res["torch_s_32_layers_est"] = t_torch * 32 / L
        res["osft_s_32_layers_est"] = t_osft * 32 / L
    # Accuracy of both, on every matrix.
    worst = {"osft_rec": 0.0, "osft_orth": 0.0, "torch_rec": 0.0, "torch_orth": 0.0}
    j = 0
    for g, p in zip(groups, parts):
        uh, sh, vh, ul, sl, vl = p
        u, s, v = torch.cat([uh, ul], -1), torch.cat([sh, sl], -1), torch.cat([vh, vl], -2)
        rec, orth = svd_errors(torch, g["w"], u, s, v)
        worst["osft_rec"], worst["osft_orth"] = max(worst["osft_rec"], rec), max(worst["osft_orth"], orth)
        for i in range(L):
            tu, ts, tv = t_torch_res[j]
            j += 1
            rec, orth = svd_errors(torch, g["w"][i], tu, ts, tv)
            worst["torch_rec"], worst["torch_orth"] = max(worst["torch_rec"], rec), max(worst["torch_orth"], orth)
    res.update(worst)

    # Randomized top-k, where the binding offers the algorithm override.
    if hasattr(ctx, "svd_algorithm"):
        try:
            hi = [(p[0], p[1], p[2]) for p in parts]

            def topk():
                for g, (uh, sh, vh) in zip(groups, hi):
                    osft.decompose(ctx, g["w"], g["k"], uh, sh, vh)

            exact = [tuple(t.clone() for t in h) for h in hi]
            ctx.svd_algorithm = "randomized"
            # Its workspace differs from the full SVD's: size it again (the query reports the
            # largest subspace the randomized routine allows).
            ws_r = max(osft.decompose_workspace_size(ctx, g["w"]) for g in groups)
            ctx.set_workspace(torch.empty(max(ws_r // 4 + 64, 1), dtype=f32, device=device))
            topk()
            t_r = timer.once(topk)
            ctx.svd_algorithm = "auto"
            err = 0.0
            for (uh, sh, vh), (eu, es, ev) in zip(hi, exact):
                a = (uh.double() * sh.double().unsqueeze(-2)) @ vh.double()
                b = (eu.double() * es.double().unsqueeze(-2)) @ ev.double()
                err = max(err, float((a - b).norm() / b.norm()))
            res["randomized_topk_s"] = t_r
            res["randomized_vs_full_speedup"] = t_osft / t_r
            res["randomized_topk_rel_error"] = err
        except Exception as e:  # report, do not hide
            res["randomized_topk_error"] = f"{type(e).__name__}: {e}"
            try:
                ctx.svd_algorithm = "auto"
            except Exception:
                pass
    else:
        res["randomized_topk"] = "skipped: this binding has no Context.svd_algorithm"
    ctx.release_workspace()
    return res


def main():
    args = parse()
    import torch

    import osft

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_compare: torch sees no CUDA device", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    gen = torch.Generator(device=device)
    gen.manual_seed(1234)
    timer = Timer(torch, device)
    ctx = osft.Context("cuda" if args.device == "cuda" else "cpu")
    out = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "osft": ".".join(map(str, osft.version())),
        "osft_library": osft.library_path,
        "args": vars(args),
    }
    print(f"gpu_compare: {out['device']}, torch {out['torch']}, osft {out['osft']} ({out['osft_library']})", flush=True)
    p = projection(torch, osft, ctx, args, device, timer, gen)
    out["projection"] = p
    print(f"projection step, {p['matrices']} matrices, {p['flops_per_step'] / 1e12:.3f} TFLOP per step:")
    for name, r in p["rows"].items():
        print(f"  {name:<14} {r['ms']:9.3f} ms  {r['tflops']:7.2f} TFLOP/s")
    print(f"  osft vs torch loop: {p['speedup_vs_torch_loop']:.2f}x faster; "
          f"osft at {100 * p['fraction_of_cublas']:.0f}% of batched cuBLAS; "
          f"max rel error vs f64 {p['max_rel_error_vs_f64']:.2e}; leakage {p['max_leakage']:.2e}", flush=True)
    if not args.skip_svd:
        d = decomposition(torch, osft, ctx, args, device, timer, gen)
        out["decomposition"] = d
        print(f"decomposition, {d['matrices']} matrices: "
              f"torch loop {d['torch_s']:.3f} s, osft {d['osft_s']:.3f} s "
              f"({d['speedup']:.2f}x)")
        print(f"  rec error osft {d['osft_rec']:.2e} torch {d['torch_rec']:.2e}; "
              f"orthonormality osft {d['osft_orth']:.2e} "
              f"torch {d['torch_orth']:.2e}")
        if "randomized_topk_s" in d:
            print(f"  randomized top-k: {d['randomized_topk_s']:.3f} s "
                  f"({d['randomized_vs_full_speedup']:.2f}x the full SVD), "
                  f"top-k rel error {d['randomized_topk_rel_error']:.2e}")
        else:
            print(f"  randomized top-k: {d.get('randomized_topk') or d.get('randomized_topk_error')}")
    ctx.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=lambda o: o if not isinstance(o, float) or math.isfinite(o) else str(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
