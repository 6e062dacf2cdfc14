"""Decomposition precision for osft.torch's ``upcast_dtype`` default: float32 vs float64 compute.

For a few realistic weight shapes (float32 weights with a decaying spectrum, as trained layers
have), it decomposes with ``osft.decompose`` at ``compute="f32"`` and ``compute="f64"``, both
writing float32 factors (the stored dtype), and reports, against a float64 LAPACK reference
(numpy.linalg.svd of the same float32 matrix upcast):

* ``recon``: ||W - (U_h S_h V_h + U_l S_l V_l)|| / ||W|| (Frobenius), the factors as stored;
* ``orth``: max(|U^T U - I|, |V V^T - I|) over the full factor pair;
* ``sval``: max |s - s_ref| / s_ref[0];
* ``leak0``: ||U_high^T U_low||_F / ||U_low||_F, the leakage the training starts from;
* ``time``: median wall time of one decomposition (seconds), and the f64/f32 ratio.

Run: OSFT_LIBRARY=target/release/libosft.so bindings/python/.venv/bin/python \\
       benches/decompose_precision.py [--repeats 3] [--shapes 512x512,1024x1024,...]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

import osft


def weight(n: int, m: int, seed: int) -> np.ndarray:
    """A float32 matrix with singular values decaying like a trained layer's (1/sqrt(i))."""
    rng = np.random.default_rng(seed)
    r = min(n, m)
    u, _ = np.linalg.qr(rng.standard_normal((n, r)))
    v, _ = np.linalg.qr(rng.standard_normal((m, r)))
    s = 1.0 / np.sqrt(np.arange(1, r + 1))
    return ((u * s) @ v.T).astype(np.float32)


def measure(w: np.ndarray, compute: str, repeats: int):
    n, m = w.shape
    k = min(n, m) // 2
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        d = osft.decompose_np(w, k, compute=compute, dtype=np.float32)
        times.append(time.perf_counter() - t0)
    uh, sh, vh, ul, sl, vl = (np.asarray(a, dtype=np.float64) for a in d)
    rec = (uh * sh) @ vh + (ul * sl) @ vl
    w64 = w.astype(np.float64)
    recon = np.linalg.norm(w64 - rec) / np.linalg.norm(w64)
    u = np.concatenate([uh, ul], axis=1)
    v = np.concatenate([vh, vl], axis=0)
    orth = max(np.abs(u.T @ u - np.eye(u.shape[1])).max(), np.abs(v @ v.T - np.eye(v.shape[0])).max())
    s_ref = np.linalg.svd(w64, compute_uv=False)
    sval = np.abs(np.concatenate([sh, sl]) - s_ref).max() / s_ref[0]
    leak0 = np.linalg.norm(uh.T @ ul) / np.linalg.norm(ul)
    return dict(recon=recon, orth=orth, sval=sval, leak0=leak0, time=statistics.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shapes", default="512x512,1024x1024,1024x2816,2048x2048")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"osft {osft.version()}")
    print("| shape | compute | recon | orth | sval | leak0 | time (s) | f64/f32 time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, spec in enumerate(args.shapes.split(",")):
        n, m = (int(x) for x in spec.split("x"))
        w = weight(n, m, seed=i)
        res = {c: measure(w, c, args.repeats) for c in ("f32", "f64")}
        for c, r in res.items():
            ratio = f"{r['time'] / res['f32']['time']:.2f}" if c == "f64" else ""
            print(f"| {n}x{m} | {c} | {r['recon']:.1e} | {r['orth']:.1e} | {r['sval']:.1e} | "
                  f"{r['leak0']:.1e} | {r['time']:.3f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
