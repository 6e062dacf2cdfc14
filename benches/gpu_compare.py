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
   extrapolated x32 and marked so), smallest shape first: per shape, `osft.decompose` (one call
   for the shape's layers), then a `torch.linalg.svd(full_matrices=False)` loop, each timed once
   after a warm-up of every method on a small matrix (no large matrix is decomposed twice by
   one method); relative reconstruction error ||W - U S V|| / ||W|| and orthonormality
   max |U^T U - I|, |V V^T - I| for both.
3. Randomized top-k (U_high, S_high, V_high only), per shape right after the full SVD, where the
   binding offers an SVD-algorithm override (`Context.svd_algorithm`): time (once) and the error
   of the top-k reconstruction relative to the exact top-k one.

Parts: `--part project` (1), `--part svd` (2 and 3), `--part all` (both, the default). With
`--json PATH` the results are one JSON document, rewritten (PATH.tmp, then renamed) after every
measurement: "state" is "running" until the part ends ("complete"), or says why it stopped
(SIGTERM from a timeout, an exception); "cases" holds every measurement finished so far, and
"loaded_libraries" the CUDA libraries this process had mapped (/proc/self/maps), so a run that
is cut short still leaves everything it measured and which cuBLAS it measured with.

Run on the GPU machine by scripts/device-check.sh (`bench-project`, `bench-svd`), or by hand:
    OSFT_LIBRARY=target/device-check/libosft.so PYTHONPATH=bindings/python \
        python3 benches/gpu_compare.py --part project --json OUT.json
A dry run of the script logic on the CPU (torch CPU build, osft CPU executor, shapes / 32; part
of `scripts/device-check.sh dry-run`):
    python benches/gpu_compare.py --device cpu --scale 32 --layers 2 --iters 3
"""

import argparse
import json
import math
import os
import signal
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

CUDA_LIBRARIES = ("libcuda.", "libcublas", "libcusolver", "libnvrtc", "libnvJitLink", "libcudart", "libcusparse",
                  "libnvidia-ptxjit")


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--part", default="all", choices=["project", "svd", "all"])
    p.add_argument("--layers", type=int, default=32, help="layers in the projection step (32: the whole model)")
    p.add_argument("--svd-layers", type=int, default=1, help="layers decomposed (32: all 224 matrices)")
    p.add_argument("--scale", type=int, default=1, help="divide every dimension (dry runs)")
    p.add_argument("--rank-ratio", type=float, default=0.5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--json", help="write the results here (rewritten after every measurement)")
    return p.parse_args()


def loaded_cuda_libraries():
    """The CUDA libraries this process has mapped, one path each, sorted."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith(CUDA_LIBRARIES))


def finite(o):
    """JSON has no NaN / inf: those are written as strings."""
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o


class Results:
    """The results document: every finished measurement in "cases", rewritten to --json (to
    PATH.tmp, then renamed: never half a file) after each one."""

    def __init__(self, path, head):
        self.path, self.t0 = path, time.monotonic()
        self.doc = dict(head, state="running", cases=[])
        self.flush()

    def case(self, **c):
        self.doc["cases"].append(c)
        self.flush()

    def flush(self):
        self.doc["seconds"] = round(time.monotonic() - self.t0, 3)
        self.doc["loaded_libraries"] = loaded_cuda_libraries()
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(finite(self.doc), f, indent=1)
            f.write("\n")
        os.replace(tmp, self.path)


class Stopped(Exception):
    """SIGTERM (the step's timeout): stop where we are, keep what was measured."""


def on_sigterm(signum, frame):
    raise Stopped(f"stopped by signal {signum} (the step's timeout)")


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


def orthonormal(torch, n, k, device, gen):
    """An n x k matrix with orthonormal columns (QR of a Gaussian, in f32)."""
    q, _ = torch.linalg.qr(torch.randn(n, k, device=device, generator=gen))
    return q


def projection(torch, osft, ctx, args, device, timer, gen, res):
    bf16 = torch.bfloat16
    groups = []
    for name, n, m in LLAMA_31_8B:
        n, m = n // args.scale, m // args.scale
        r = min(n, m)
        k = int(round(args.rank_ratio * r))
        lo = r - k
        L = args.layers
        g = {"name": name, "n": n, "m": m, "k": k, "lo": lo, "count": L}
        # One QR per shape, the same bases in every layer (timing does not depend on the values;
        # 448 large QRs would cost device time for nothing).
        g["uh"] = orthonormal(torch, n, k, device, gen).to(bf16).expand(L, n, k).contiguous()
        # k x M, rows orthonormal
        g["vh"] = orthonormal(torch, m, k, device, gen).t().to(bf16).expand(L, k, m).contiguous()
        g["du0"] = torch.randn(L, n, lo, device=device, generator=gen).to(bf16)
        g["dv0"] = torch.randn(L, lo, m, device=device, generator=gen).to(bf16)
        g["du"], g["dv"] = g["du0"].clone(), g["dv0"].clone()
        groups.append(g)
    flops = sum(g["count"] * (4 * g["n"] * g["lo"] * g["k"] + 4 * g["lo"] * g["m"] * g["k"]) for g in groups)
    out = {"matrices": sum(g["count"] for g in groups), "flops_per_step": flops}
    res.doc["projection"] = out

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
    out["workspace_bytes"] = ws

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
    out["max_rel_error_vs_f64"], out["max_leakage"] = worst, leak
    res.case(kind="projection check", max_rel_error_vs_f64=worst, max_leakage=leak)
    print(f"projection step, {out['matrices']} matrices, {flops / 1e12:.3f} TFLOP per step; "
          f"osft max rel error vs f64 {worst:.2e}, leakage {leak:.2e}", flush=True)

    # Alternate the three in rounds so that drift of a shared machine hits all alike.
    samples = {"torch loop": [], "cuBLAS bound": [], "osft": []}
    fns = {"torch loop": torch_loop, "cuBLAS bound": cublas_bound, "osft": osft_step}
    rounds = 3
    for rnd in range(rounds):
        for name, f in fns.items():
            t = timer.median(f, args.warmup, max(1, args.iters // rounds))
            samples[name].append(t)
            res.case(kind="projection timing", variant=name, round=rnd, ms=t * 1e3)
    ctx.release_workspace()
    rows = {}
    for name, s in samples.items():
        t = statistics.median(s)
        rows[name] = {"ms": t * 1e3, "tflops": flops / t / 1e12}
    out["rows"] = rows
    out["speedup_vs_torch_loop"] = rows["torch loop"]["ms"] / rows["osft"]["ms"]
    out["fraction_of_cublas"] = rows["cuBLAS bound"]["ms"] / rows["osft"]["ms"]
    res.flush()
    for name, r in rows.items():
        print(f"  {name:<14} {r['ms']:9.3f} ms  {r['tflops']:7.2f} TFLOP/s")
    print(f"  osft vs torch loop: {out['speedup_vs_torch_loop']:.2f}x faster; "
          f"osft at {100 * out['fraction_of_cublas']:.0f}% of batched cuBLAS", flush=True)


def svd_errors(torch, w, u, s, v):
    """Relative reconstruction error and orthonormality error, in float64."""
    w, u, s, v = w.double(), u.double(), s.double(), v.double()
    rec = float((w - (u * s.unsqueeze(-2)) @ v).norm() / w.norm())
    eye_u = torch.eye(u.shape[-1], dtype=torch.float64, device=u.device)
    eye_v = torch.eye(v.shape[-2], dtype=torch.float64, device=v.device)
    orth = max(float((u.transpose(-1, -2) @ u - eye_u).abs().max()),
               float((v @ v.transpose(-1, -2) - eye_v).abs().max()))
    return rec, orth


def decomposition(torch, osft, ctx, args, device, timer, gen, res):
    L = args.svd_layers
    f32 = torch.float32
    shapes = []
    for name, n, m in LLAMA_31_8B:
        n, m = n // args.scale, m // args.scale
        r = min(n, m)
        shapes.append({"name": name, "n": n, "m": m, "r": r, "k": int(round(args.rank_ratio * r))})
    # Smallest first: a run stopped by its timeout has measured as many shapes as it could.
    shapes.sort(key=lambda g: g["n"] * g["m"] * g["r"])
    randomized = hasattr(ctx, "svd_algorithm")
    out = {"layers": L, "matrices": L * len(shapes), "shapes_done": 0, "extrapolated_to_32_layers": L != 32}
    res.doc["decomposition"] = out

    def parts(n, m, r, k, batch=L):
        e = lambda *s: torch.empty(batch, *s, dtype=f32, device=device)  # noqa: E731
        return e(n, k), e(k), e(k, m), e(n, r - k), e(r - k), e(r - k, m)

    def workspace(w):
        """The larger of the full and the randomized SVD's workspace for w."""
        ws = osft.decompose_workspace_size(ctx, w)
        if randomized:
            ctx.svd_algorithm = "randomized"
            try:
                ws = max(ws, osft.decompose_workspace_size(ctx, w))
            finally:
                ctx.svd_algorithm = "auto"
        return ws

    # One workspace for every shape and method, set once (no allocation inside a timed call).
    ws = max(workspace(torch.empty(L, g["n"], g["m"], dtype=f32, device=device)) for g in shapes)
    ctx.set_workspace(torch.empty(max(ws // 4 + 64, 1), dtype=f32, device=device))
    out["workspace_bytes"] = ws

    # Warm-up of every method on one small matrix (handles, NVRTC, torch's lazy init).
    n0, m0 = max(8, 256 // args.scale), max(4, 128 // args.scale)
    w0 = torch.randn(1, n0, m0, device=device, generator=gen)
    p0 = parts(n0, m0, m0, m0 // 2, batch=1)
    osft.decompose(ctx, w0, m0 // 2, *p0)
    torch.linalg.svd(w0[0], full_matrices=False)
    if randomized:
        try:
            ctx.svd_algorithm = "randomized"
            osft.decompose(ctx, w0, m0 // 2, *p0[:3])
        except Exception as e:  # report, do not hide
            randomized = False
            out["randomized_topk_error"] = f"{type(e).__name__}: {e}"
        finally:
            ctx.svd_algorithm = "auto"
    else:
        out["randomized_topk"] = "skipped: this binding has no Context.svd_algorithm"
    timer.sync()

    totals = {"osft_s": 0.0, "torch_s": 0.0, "randomized_topk_s": 0.0}
    worst = {"osft_rec": 0.0, "osft_orth": 0.0, "torch_rec": 0.0, "torch_orth": 0.0, "randomized_topk_rel_error": 0.0}
    for g in shapes:
        n, m, r, k = g["n"], g["m"], g["r"], g["k"]
        w = torch.randn(L, n, m, device=device, generator=gen)
        label = f"{g['name']} {n}x{m} x{L}"
        p = parts(n, m, r, k)
        t_osft = timer.once(lambda w=w, k=k, p=p: osft.decompose(ctx, w, k, *p))
        uh, sh, vh, ul, sl, vl = p
        rec, orth = svd_errors(torch, w, torch.cat([uh, ul], -1), torch.cat([sh, sl], -1), torch.cat([vh, vl], -2))
        del ul, sl, vl, p
        res.case(kind="decomposition", method="osft", shape=label, seconds=t_osft, rec_error=rec, orth_error=orth)
        print(f"  {label:<28} osft  {t_osft:8.3f} s  rec {rec:.2e} orth {orth:.2e}", flush=True)
        totals["osft_s"] += t_osft
        worst["osft_rec"], worst["osft_orth"] = max(worst["osft_rec"], rec), max(worst["osft_orth"], orth)

        got = []

        def torch_loop(w=w, got=got):
            got.extend(torch.linalg.svd(w[i], full_matrices=False) for i in range(L))

        t_torch = timer.once(torch_loop)
        rec, orth = 0.0, 0.0
        for i, (tu, ts, tv) in enumerate(got):
            a, b = svd_errors(torch, w[i], tu, ts, tv)
            rec, orth = max(rec, a), max(orth, b)
        del got
        res.case(kind="decomposition", method="torch loop", shape=label, seconds=t_torch, rec_error=rec,
                 orth_error=orth)
        print(f"  {label:<28} torch {t_torch:8.3f} s  rec {rec:.2e} orth {orth:.2e}", flush=True)
        totals["torch_s"] += t_torch
        worst["torch_rec"], worst["torch_orth"] = max(worst["torch_rec"], rec), max(worst["torch_orth"], orth)

        if randomized:
            hi = tuple(torch.empty_like(x) for x in (uh, sh, vh))
            try:
                ctx.svd_algorithm = "randomized"
                t_r = timer.once(lambda w=w, k=k, hi=hi: osft.decompose(ctx, w, k, *hi))
            except Exception as e:  # report, do not hide
                randomized = False
                out["randomized_topk_error"] = f"{type(e).__name__}: {e}"
                res.case(kind="decomposition", method="osft randomized top-k", shape=label, error=str(e))
            else:
                a = (hi[0].double() * hi[1].double().unsqueeze(-2)) @ hi[2].double()
                b = (uh.double() * sh.double().unsqueeze(-2)) @ vh.double()
                err = float((a - b).norm() / b.norm())
                del a, b
                res.case(kind="decomposition", method="osft randomized top-k", shape=label, seconds=t_r,
                         topk_rel_error=err)
                print(f"  {label:<28} rand  {t_r:8.3f} s  top-k rel error {err:.2e}", flush=True)
                totals["randomized_topk_s"] += t_r
                worst["randomized_topk_rel_error"] = max(worst["randomized_topk_rel_error"], err)
            finally:
                ctx.svd_algorithm = "auto"
        del w, uh, sh, vh
        out["shapes_done"] += 1
        out.update(totals)
        out.update(worst)
        res.flush()

    ctx.release_workspace()
    out["speedup"] = totals["torch_s"] / totals["osft_s"] if totals["osft_s"] else float("nan")
    if randomized and totals["randomized_topk_s"]:
        out["randomized_vs_full_speedup"] = totals["osft_s"] / totals["randomized_topk_s"]
    if L != 32:
        out["torch_s_32_layers_est"] = totals["torch_s"] * 32 / L
        out["osft_s_32_layers_est"] = totals["osft_s"] * 32 / L
    res.flush()
    print(f"decomposition, {out['matrices']} matrices: torch loop {out['torch_s']:.3f} s, "
          f"osft {out['osft_s']:.3f} s ({out['speedup']:.2f}x); worst rec error osft {out['osft_rec']:.2e} "
          f"torch {out['torch_rec']:.2e}", flush=True)


def main():
    args = parse()
    signal.signal(signal.SIGTERM, on_sigterm)
    import torch

    import osft

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_compare: torch sees no CUDA device", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    gen = torch.Generator(device=device)
    gen.manual_seed(1234)
    timer = Timer(torch, device)
    head = {
        "part": args.part,
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "osft": ".".join(map(str, osft.version())),
        "osft_library": osft.library_path,
        # torch's GEMM settings for the torch variants (osft's cuBLAS handle disallows
        # reduced-precision reductions and uses TF32 only in its TF32 math mode).
        "torch_matmul": {
            "allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "allow_bf16_reduced_precision_reduction": torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
            "allow_fp16_reduced_precision_reduction": torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
        },
        "args": vars(args),
    }
    res = Results(args.json, head)
    print(f"gpu_compare ({args.part}): {head['device']}, torch {head['torch']}, osft {head['osft']} "
          f"({head['osft_library']})", flush=True)
    ctx = osft.Context("cuda" if args.device == "cuda" else "cpu")
    code = 0
    try:
        if args.part in ("project", "all"):
            projection(torch, osft, ctx, args, device, timer, gen, res)
        if args.part in ("svd", "all"):
            decomposition(torch, osft, ctx, args, device, timer, gen, res)
        res.doc["state"] = "complete"
    except Stopped as e:
        res.doc["state"] = str(e)
        code = 124
    except Exception as e:
        res.doc["state"] = f"failed: {type(e).__name__}: {e}"
        code = 1
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the last write finish
        res.flush()
        for lib in res.doc["loaded_libraries"]:
            print(f"loaded: {lib}")
        print(f"gpu_compare ({args.part}): {res.doc['state']} after {res.doc['seconds']:.1f} s", flush=True)
        ctx.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
