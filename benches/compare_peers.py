#!/usr/bin/env python3
"""Side-by-side timing of osft against what OSFT users run today, in one run, on one machine,
on the very same random inputs.

CPU (always):
  * projection, written as the peers write it (PEFT OSF, mini_trainer, the seed repository):
        left  (U side):  dU - U_h @ (U_h.T @ dU)
        right (V side):  dV - (dV @ V_h.T) @ V_h
    in numpy, against osft's in-place projection (osft-bench --kernel project), on the
    Llama-3.1-8B target shapes at rank ratio 0.5, plus the weighted sum of one whole layer;
  * SGEMM (numpy `a @ b` and osft's own GEMM primitive): 4096^3 once, and 2048^3 in the same
    rounds as every projection case — the yardstick of the projection ("osft/SGEMM": osft's
    projection GFLOP/s over the better of the two SGEMMs timed alongside it);
  * thin SVD: scipy.linalg.svd(lapack_driver="gesdd", full_matrices=False) against osft's SVD
    (osft-bench --kernel svd), 512 x 512 to 4096 x 1024;
  * a batch of 1000 SVDs of 64 x 64: numpy's stacked np.linalg.svd against osft's batched SVD.

GPU (only where PyTorch with CUDA is importable): a clearly separated stub path that times
PyTorch's projection and torch.linalg.svd, and osft's CUDA executor through
`osft-bench --executor cuda` when that executor is available (it reports so when not).

Method: inputs are drawn once with numpy (orthonormal bases from a QR factorisation) and written
as raw row-major files that osft-bench reads (--load); osft's outputs come back (--save) and are
checked against numpy's. Each case runs for --rounds rounds, alternating numpy then osft, each
round a warm-up and --reps timed runs; a side's figure is the median of all its timed runs; a
ratio is numpy's median time over osft's median time (> 1: osft is faster). osft-bench times its
own calls in-process (process start and file loading are not timed).

Set up the Python side with `bash benches/setup_venv.sh`, then run (unsetting the OpenBLAS
variables that slow a current numpy, in this command alone):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv-bench/bin/python benches/compare_peers.py
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import numpy as np
    import scipy
    import scipy.linalg
    from threadpoolctl import threadpool_info
except ImportError as e:  # pragma: no cover - the message is the point
    sys.exit(f"compare_peers.py: {e}. Run `bash benches/setup_venv.sh` and use .venv-bench/bin/python.")


# ---------------------------------------------------------------------------------------------
# Cases.

# Llama-3.1-8B at rank ratio 0.5 (k = R - k = R/2). A layer step projects, for every target,
# dU_low (N x (R-k)) against U_high (N x k) and dV_low ((R-k) x M) against V_high (k x M).
#   q, o (4096x4096): left 4096x2048 | right 2048x4096          (x2)
#   k, v (1024x4096): left 1024x512  | right 512x4096           (x2)
#   gate, up (14336x4096): left 14336x2048 | right 2048x4096    (x2)
#   down (4096x14336): left 4096x2048 | right 2048x14336        (x1)
PROJECTION_CASES = [
    # (name, side, rows of X, cols of X, k, count in one Llama-3.1-8B layer)
    ("q/o/down dU_low 4096x2048", "left", 4096, 2048, 2048, 3),
    ("q/o/gate/up dV_low 2048x4096", "right", 2048, 4096, 2048, 4),
    ("gate/up dU_low 14336x2048", "left", 14336, 2048, 2048, 2),
    ("down dV_low 2048x14336", "right", 2048, 14336, 2048, 1),
    ("k/v dU_low 1024x512", "left", 1024, 512, 512, 2),
    ("k/v dV_low 512x4096", "right", 512, 4096, 512, 2),
]
QUICK_PROJECTION_CASES = [
    ("q dU_low 1024x512 (quick)", "left", 1024, 512, 512, 1),
    ("q dV_low 512x1024 (quick)", "right", 512, 1024, 512, 1),
]
SVD_CASES = [(512, 512), (1024, 1024), (2048, 2048), (4096, 1024)]
QUICK_SVD_CASES = [(512, 512)]
GEMM_N = 4096
YARD_N = 2048  # the SGEMM timed alongside every projection case
QUICK_GEMM_N = 1024


# ---------------------------------------------------------------------------------------------
# Helpers.


def median(xs):
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def time_numpy(f, reps, warmup=1):
    for _ in range(warmup):
        f()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return out


class Osft:
    """osft through the osft-bench command's kernel mode (the ctypes binding does not exist yet)."""

    def __init__(self, binary, executor="cpu"):
        self.binary = binary
        self.executor = executor

    def run(self, args, reps, warmup=1):
        cmd = [self.binary, "--executor", self.executor, "--json", "--no-progress",
               "--reps", str(reps), "--warmup", str(warmup)] + [str(a) for a in args]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
        return json.loads(p.stdout)


def orthonormal_columns(rng, n, k):
    q, _ = np.linalg.qr(rng.standard_normal((n, k), dtype=np.float32))
    return np.ascontiguousarray(q, dtype=np.float32)


def rel_err(a, b):
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-30))


# ---------------------------------------------------------------------------------------------
# The CPU comparison.


def cpu_projection(osft, tmp, rng, cases, rounds, reps, yard_n):
    """Each case's rounds also time a yard_n^3 SGEMM on both sides (numpy and osft's GEMM
    primitive), so that the SGEMM yardstick sees the same machine load as the projection."""
    rows = []
    ya = rng.standard_normal((yard_n, yard_n), dtype=np.float32)
    yb = rng.standard_normal((yard_n, yard_n), dtype=np.float32)
    yflops = 2.0 * yard_n ** 3
    for name, side, n, m, k, count in cases:
        d = os.path.join(tmp, "proj")
        os.makedirs(d, exist_ok=True)
        x = rng.standard_normal((n, m), dtype=np.float32)
        x.tofile(os.path.join(d, "x.bin"))
        if side == "left":
            u = orthonormal_columns(rng, n, k)  # U_h: n x k
            u.tofile(os.path.join(d, "u.bin"))
            f = lambda x=x, u=u: x - u @ (u.T @ x)  # noqa: E731  (as the peers write it)
        else:
            v = np.ascontiguousarray(orthonormal_columns(rng, m, k).T)  # V_h: k x m
            v.tofile(os.path.join(d, "v.bin"))
            f = lambda x=x, v=v: x - (x @ v.T) @ v  # noqa: E731
        ref = f()
        flops = 4.0 * n * m * k
        t_np, t_os, y_np, y_os = [], [], [], []
        for _ in range(rounds):
            t_np += time_numpy(f, reps)
            j = osft.run(["--kernel", "project", "--shape", f"{n}x{m}", "--k", k, "--side", side,
                          "--load", d, "--save", d], reps)
            t_os += j["time"]["samples_s"]
            y_np += time_numpy(lambda: ya @ yb, reps)
            j = osft.run(["--kernel", "gemm", "--shape", f"{yard_n}x{yard_n}", "--k", yard_n], reps)
            y_os += j["time"]["samples_s"]
        sgemm = max(yflops / median(y_np), yflops / median(y_os)) / 1e9
        out = np.fromfile(os.path.join(d, "out.bin"), dtype=np.float32).reshape(n, m)
        rows.append(dict(name=name, side=side, shape=[n, m], k=k, count_per_layer=count, flops=flops,
                         numpy_s=median(t_np), osft_s=median(t_os), numpy_samples_s=t_np, osft_samples_s=t_os,
                         numpy_gflops=flops / median(t_np) / 1e9, osft_gflops=flops / median(t_os) / 1e9,
                         ratio=median(t_np) / median(t_os), rel_diff=rel_err(out, ref),
                         sgemm_n=yard_n, sgemm_numpy_gflops=yflops / median(y_np) / 1e9,
                         sgemm_osft_gflops=yflops / median(y_os) / 1e9, sgemm_gflops=sgemm,
                         osft_fraction_of_sgemm=flops / median(t_os) / 1e9 / sgemm,
                         numpy_fraction_of_sgemm=flops / median(t_np) / 1e9 / sgemm))
    return rows


def cpu_gemm(osft, tmp, rng, n, rounds, reps):
    d = os.path.join(tmp, "gemm")
    os.makedirs(d, exist_ok=True)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a.tofile(os.path.join(d, "a.bin"))
    b.tofile(os.path.join(d, "b.bin"))
    t_np, t_os = [], []
    for _ in range(rounds):
        t_np += time_numpy(lambda: a @ b, reps)
        j = osft.run(["--kernel", "gemm", "--shape", f"{n}x{n}", "--k", n, "--load", d, "--save", d], reps)
        t_os += j["time"]["samples_s"]
    c = np.fromfile(os.path.join(d, "c.bin"), dtype=np.float32).reshape(n, n)
    flops = 2.0 * n ** 3
    return dict(n=n, numpy_s=median(t_np), osft_s=median(t_os), numpy_samples_s=t_np, osft_samples_s=t_os,
                numpy_gflops=flops / median(t_np) / 1e9, osft_gflops=flops / median(t_os) / 1e9,
                ratio=median(t_np) / median(t_os), rel_diff=rel_err(c, a @ b))


def cpu_svd(osft, tmp, rng, cases, rounds, reps):
    rows = []
    for n, m in cases:
        d = os.path.join(tmp, "svd")
        os.makedirs(d, exist_ok=True)
        w = rng.standard_normal((n, m), dtype=np.float32)
        w.tofile(os.path.join(d, "w.bin"))
        f = lambda w=w: scipy.linalg.svd(w, full_matrices=False, lapack_driver="gesdd", check_finite=False)  # noqa: E731
        s_ref = f()[1]
        t_np, t_os = [], []
        for _ in range(rounds):
            t_np += time_numpy(f, reps)
            j = osft.run(["--kernel", "svd", "--shape", f"{n}x{m}", "--load", d, "--save", d], reps)
            t_os += j["time"]["samples_s"]
        s = np.fromfile(os.path.join(d, "s.bin"), dtype=np.float32)
        rows.append(dict(name=f"{n}x{m}", shape=[n, m], batch=1, peer="scipy.linalg.svd gesdd", numpy_s=median(t_np),
                         osft_s=median(t_os), numpy_samples_s=t_np, osft_samples_s=t_os,
                         ratio=median(t_np) / median(t_os), rel_diff=rel_err(s, s_ref)))
    return rows


def cpu_svd_batched(osft, tmp, rng, batch, n, rounds, reps):
    d = os.path.join(tmp, "svdb")
    os.makedirs(d, exist_ok=True)
    w = rng.standard_normal((batch, n, n), dtype=np.float32)
    w.tofile(os.path.join(d, "w.bin"))
    f = lambda: np.linalg.svd(w, full_matrices=False)  # noqa: E731
    s_ref = f()[1]
    t_np, t_os = [], []
    for _ in range(rounds):
        t_np += time_numpy(f, reps)
        j = osft.run(["--kernel", "svd", "--shape", f"{n}x{n}", "--batch", batch, "--load", d, "--save", d], reps)
        t_os += j["time"]["samples_s"]
    s = np.fromfile(os.path.join(d, "s.bin"), dtype=np.float32).reshape(batch, n)
    return dict(name=f"{batch} x {n}x{n}", shape=[n, n], batch=batch, peer="numpy.linalg.svd (stacked)",
                numpy_s=median(t_np), osft_s=median(t_os), numpy_samples_s=t_np, osft_samples_s=t_os,
                ratio=median(t_np) / median(t_os), rel_diff=rel_err(s, s_ref))


# ---------------------------------------------------------------------------------------------
# GPU stub: runs only where PyTorch with CUDA is importable.


def gpu_comparison(osft_binary, rounds, reps):
    """PyTorch on CUDA against osft's CUDA executor. STUB: osft's side runs through
    `osft-bench --executor cuda`, which reports BackendUnavailable until that executor lands;
    PyTorch's figures are printed regardless."""
    try:
        import torch
    except ImportError:
        return {"skipped": "torch is not installed"}
    if not torch.cuda.is_available():
        return {"skipped": "torch has no usable CUDA device"}
    dev = torch.device("cuda")
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": []}

    def t_cuda(f):
        f()
        torch.cuda.synchronize()
        out = []
        for _ in range(reps * rounds):
            s = time.perf_counter()
            f()
            torch.cuda.synchronize()
            out.append(time.perf_counter() - s)
        return median(out)

    osft = Osft(osft_binary, executor="cuda")
    for name, side, n, m, k, _count in PROJECTION_CASES:
        x = torch.randn(n, m, device=dev)
        if side == "left":
            u = torch.linalg.qr(torch.randn(n, k, device=dev))[0]
            f = lambda x=x, u=u: x - u @ (u.T @ x)  # noqa: E731
        else:
            v = torch.linalg.qr(torch.randn(m, k, device=dev))[0].T.contiguous()
            f = lambda x=x, v=v: x - (x @ v.T) @ v  # noqa: E731
        t_torch = t_cuda(f)
        row = {"name": name, "torch_s": t_torch, "torch_gflops": 4.0 * n * m * k / t_torch / 1e9}
        try:
            j = osft.run(["--kernel", "project", "--shape", f"{n}x{m}", "--k", k, "--side", side], reps)
            row["osft_s"] = j["time"]["median_s"]
            row["ratio"] = t_torch / row["osft_s"]
        except RuntimeError as e:
            row["osft"] = f"unavailable: {e}"
        res["rows"].append(row)
    for n, m in SVD_CASES:
        w = torch.randn(n, m, device=dev)
        t_torch = t_cuda(lambda w=w: torch.linalg.svd(w, full_matrices=False))
        row = {"name": f"svd {n}x{m}", "torch_s": t_torch}
        try:
            j = osft.run(["--kernel", "svd", "--shape", f"{n}x{m}"], reps)
            row["osft_s"] = j["time"]["median_s"]
            row["ratio"] = t_torch / row["osft_s"]
        except RuntimeError as e:
            row["osft"] = f"unavailable: {e}"
        res["rows"].append(row)
    return res


# ---------------------------------------------------------------------------------------------


def environment():
    info = threadpool_info()
    keys = ("internal_api", "version", "architecture", "num_threads", "threading_layer", "prefix")
    blas = [{k: i.get(k) for k in keys} for i in info]
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": blas,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS"),
        "loadavg_start": loadavg(),
    }


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def targets(results):
    """The issue's CPU targets, judged on this run's figures."""
    out = []
    p = results.get("projection")
    if p:
        layer = p["layer"]
        worst = min(r["ratio"] for r in p["rows"])
        out.append(("projection >= 1.0x numpy (one layer, weighted)", layer["ratio"] >= 1.0,
                    f"{layer['ratio']:.2f}x (per shape {worst:.2f}x to {max(r['ratio'] for r in p['rows']):.2f}x)"))
        out.append(("projection >= 90% of SGEMM (same run)", layer["osft_fraction_of_sgemm"] >= 0.9,
                    f"{100 * layer['osft_fraction_of_sgemm']:.0f}% of {layer['sgemm_gflops']:.1f} GFLOP/s "
                    f"(numpy's projection: {100 * layer['numpy_fraction_of_sgemm']:.0f}%)"))
    if results.get("svd"):
        worst = min(r["ratio"] for r in results["svd"])
        out.append(("SVD >= 1.0x scipy gesdd, 512x512 .. 4096x1024", worst >= 1.0,
                    ", ".join(f"{r['name']} {r['ratio']:.2f}x" for r in results["svd"])))
    b = results.get("svd_batched")
    if b:
        out.append((f"batched SVD {b['name']} >= 2x numpy", b["ratio"] >= 2.0, f"{b['ratio']:.2f}x"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "osft-bench"),
                    help="the osft-bench binary")
    ap.add_argument("--no-build", action="store_true", help="do not run `cargo build --release --bin osft-bench` first")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per case (default 3)")
    ap.add_argument("--reps", type=int, default=2, help="timed runs per side per round (default 2)")
    ap.add_argument("--quick", action="store_true", help="small shapes only (a smoke run)")
    ap.add_argument("--only", choices=["projection", "svd", "batched", "gemm"], action="append",
                    help="run only these parts (repeatable)")
    ap.add_argument("--json", metavar="PATH", help="also write every figure and sample to PATH")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    env = environment()
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if env[var]:
            print(f"warning: {var}={env[var]} is set; it slows a current numpy. Rerun with "
                  f"`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...` for a fair comparison.", file=sys.stderr)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "osft-bench"], cwd=ROOT, check=True)
    osft = Osft(args.bin)
    parts = set(args.only or ["projection", "svd", "batched", "gemm"])
    rng = np.random.default_rng(args.seed)
    results = {"environment": env, "method": {"rounds": args.rounds, "reps": args.reps, "warmup_per_round": 1,
                                              "statistic": "median of all timed runs",
                                              "ratio": "peer median time / osft median time (> 1: osft faster)"}}
    blas = ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, {b['num_threads']} threads)"
                     for b in env["blas"])
    print(f"machine: {env['cpu']}, {env['cores']} cores; numpy {env['numpy']}, scipy {env['scipy']}; BLAS: {blas}")
    print(f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}")
    print(f"method: {args.rounds} alternating rounds x (1 warm-up + {args.reps} timed runs) per side; medians; "
          f"ratio = peer time / osft time (> 1: osft faster)\n")

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="osft-peers-") as tmp:
        if "gemm" in parts or "projection" in parts:
            g = cpu_gemm(osft, tmp, rng, QUICK_GEMM_N if args.quick else GEMM_N, args.rounds, args.reps)
            results["sgemm"] = g
            print(f"SGEMM {g['n']}^3 (yardstick)        numpy {g['numpy_gflops']:7.1f} GFLOP/s   "
                  f"osft {g['osft_gflops']:7.1f} GFLOP/s   ratio {g['ratio']:.2f}x   (rel diff {g['rel_diff']:.1e})\n")
        if "projection" in parts:
            yard_n = QUICK_GEMM_N if args.quick else YARD_N
            cases = QUICK_PROJECTION_CASES if args.quick else PROJECTION_CASES
            rows = cpu_projection(osft, tmp, rng, cases, args.rounds, args.reps, yard_n)
            print(f"{'projection (f32, in one Llama-3.1-8B layer)':<34} {'k':>5} {'numpy':>10} {'osft':>10} "
                  f"{'numpy GF/s':>10} {'osft GF/s':>10} {'ratio':>7} {'osft/SGEMM':>10} {'rel diff':>9}")
            for r in rows:
                print(f"{r['name']:<34} {r['k']:>5} {r['numpy_s'] * 1e3:>8.1f}ms {r['osft_s'] * 1e3:>8.1f}ms "
                      f"{r['numpy_gflops']:>10.1f} {r['osft_gflops']:>10.1f} {r['ratio']:>6.2f}x "
                      f"{100 * r['osft_fraction_of_sgemm']:>9.0f}% {r['rel_diff']:>9.1e}")
            layer = {
                "numpy_s": sum(r["numpy_s"] * r["count_per_layer"] for r in rows),
                "osft_s": sum(r["osft_s"] * r["count_per_layer"] for r in rows),
                "flops": sum(r["flops"] * r["count_per_layer"] for r in rows),
            }
            layer["ratio"] = layer["numpy_s"] / layer["osft_s"]
            layer["numpy_gflops"] = layer["flops"] / layer["numpy_s"] / 1e9
            layer["osft_gflops"] = layer["flops"] / layer["osft_s"] / 1e9
            # The layer's yardstick: the SGEMM rates of its cases, weighted by the time spent in each.
            w = [r["osft_s"] * r["count_per_layer"] for r in rows]
            sgemm_best = sum(wi * r["sgemm_gflops"] for wi, r in zip(w, rows)) / sum(w)
            layer["sgemm_gflops"] = sgemm_best
            layer["osft_fraction_of_sgemm"] = layer["osft_gflops"] / sgemm_best
            layer["numpy_fraction_of_sgemm"] = layer["numpy_gflops"] / sgemm_best
            print(f"{'one layer (weighted by count)':<34} {'':>5} "
                  f"{layer['numpy_s'] * 1e3:>8.0f}ms {layer['osft_s'] * 1e3:>8.0f}ms "
                  f"{layer['numpy_gflops']:>10.1f} {layer['osft_gflops']:>10.1f} {layer['ratio']:>6.2f}x "
                  f"{100 * layer['osft_fraction_of_sgemm']:>9.0f}%")
            print(f"(osft/SGEMM: osft's projection GFLOP/s over the better of numpy's and osft's {yard_n}^3 SGEMM, "
                  "timed in the "
                  f"same rounds as each case; for the layer {sgemm_best:.1f} GFLOP/s, of which numpy's projection "
                  f"reaches {100 * layer['numpy_fraction_of_sgemm']:.0f}%)\n")
            results["projection"] = {"rows": rows, "layer": layer}
        if "svd" in parts:
            rows = cpu_svd(osft, tmp, rng, QUICK_SVD_CASES if args.quick else SVD_CASES, args.rounds, args.reps)
            print(f"{'thin SVD (f32, U S Vt)':<34} {'scipy gesdd':>12} {'osft':>10} {'ratio':>7} {'rel diff S':>11}")
            for r in rows:
                print(f"{r['name']:<34} {r['numpy_s'] * 1e3:>10.1f}ms {r['osft_s'] * 1e3:>8.1f}ms "
                      f"{r['ratio']:>6.2f}x {r['rel_diff']:>11.1e}")
            print()
            results["svd"] = rows
        if "batched" in parts:
            batch = 100 if args.quick else 1000
            r = cpu_svd_batched(osft, tmp, rng, batch, 64, args.rounds, args.reps)
            print(f"{'batched SVD (f32)':<34} {'numpy stacked':>12} {'osft':>10} {'ratio':>7} {'rel diff S':>11}")
            print(f"{r['name']:<34} {r['numpy_s'] * 1e3:>10.1f}ms {r['osft_s'] * 1e3:>8.1f}ms "
                  f"{r['ratio']:>6.2f}x {r['rel_diff']:>11.1e}\n")
            results["svd_batched"] = r

    results["environment"]["loadavg_end"] = loadavg()
    tg = targets(results)
    results["targets"] = [{"target": t, "met": met, "figure": fig} for t, met, fig in tg]
    if tg:
        print("targets (CPU, f32, this run):")
        for t, met, fig in tg:
            print(f"  {'met   ' if met else 'MISSED'} {t:<48} {fig}")
        print(f"  (load average at start {env['loadavg_start']}, at end {results['environment']['loadavg_end']})\n")

    gpu = gpu_comparison(args.bin, args.rounds, args.reps)
    results["gpu"] = gpu
    if "skipped" in gpu:
        print(f"GPU comparison (PyTorch): skipped — {gpu['skipped']}")
    else:
        print(f"GPU comparison (PyTorch {gpu['torch']} on {gpu['device']}):")
        for r in gpu["rows"]:
            if "osft_s" in r:
                osft_part = f"osft {r['osft_s'] * 1e3:.2f} ms, ratio {r['ratio']:.2f}x"
            else:
                osft_part = r.get("osft", "")
            print(f"  {r['name']:<34} torch {r['torch_s'] * 1e3:.2f} ms   {osft_part}")
    results["wall_s"] = time.perf_counter() - t0
    print(f"\nwall time {results['wall_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
