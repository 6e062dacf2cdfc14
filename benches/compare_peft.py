#!/usr/bin/env python3
"""osft.torch side by side with Hugging Face PEFT's OSF tuner, on the same model, in one run, on
the CPU: the time and peak memory of applying OSFT, and of a training step (plain AdamW on both;
osft also with its OSFTOptimizer, which PEFT has no counterpart of, and with its SVD in float32,
``upcast_dtype=torch.float32``, as PEFT computes it; osft's default is float64).

The model: a random transformers Llama (hidden 512, intermediate 1024, 2 layers, 8 heads, vocab
1024; nothing downloaded), float32; targets the 7 projections of every layer on both sides, half
of each matrix's rank frozen (osft ``frozen_ratio=0.5``, PEFT ``effective_rank=0.5``). A step is
forward + backward (causal-LM loss on a 4 x 128 batch) + optimizer step + zero_grad.

Method: every measurement runs in a fresh process (so that each peak resident set is its own):
``--rounds`` rounds, alternating the sides in each round; a side's step time is the median over
its rounds of the median of its timed steps (after warm-up steps). Peak memory is
``ru_maxrss`` (the process's resident high-water mark) minus the resident size just before the
phase: applying OSFT (from the plain model to the wrapped one), and training (from after
applying to the end of the steps). ``ru_maxrss`` is not reset between phases (it counts from
the process's start), so each figure is an upper bound on that phase's own peak. Ratios are
osft / PEFT (< 1: osft is faster or smaller).
Both sides are checked to train the same number of parameters and to reproduce the base
model's logits before training. Both run with one thread (torch's, and osft's rayon pool
through ``RAYON_NUM_THREADS=1``), the machine being shared.

PEFT is not a dependency of osft: install it into a separate venv for this benchmark alone
(it reuses the test venv's torch and transformers through a .pth file)::

    python3 -m venv target/peft-bench-venv
    bindings/python/.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \\
        > target/peft-bench-venv/lib/python3.11/site-packages/osft-test-venv.pth
    target/peft-bench-venv/bin/python -m pip install peft==0.21.2
    OSFT_LIBRARY=target/release/libosft.so target/peft-bench-venv/bin/python benches/compare_peft.py
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))  # this checkout's osft package

# "osft f32 SVD": osft decomposing in float32 as PEFT does (osft's default is float64).
SIDES = ("osft", "osft+OSFTOptimizer", "osft f32 SVD", "peft")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def one(side: str, steps: int, warmup: int) -> dict:
    import torch
    import transformers as T

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=1024, hidden_size=512, intermediate_size=1024,
                        num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=8)
    model = T.AutoModelForCausalLM.from_config(cfg)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 1024, (4, 128), generator=g)
    with torch.no_grad():
        base_logits = model(input_ids=ids[:1]).logits
    if side == "peft":
        import peft

        before_rss = rss_kib()
        t0 = time.perf_counter()
        model = peft.get_peft_model(model, peft.OSFConfig(effective_rank=0.5,
                                                          target_modules=TARGETS))
        t_apply = time.perf_counter() - t0
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        version = peft.__version__
    else:
        import osft.torch as ot

        kw = {"upcast_dtype": torch.float32} if side == "osft f32 SVD" else {}
        before_rss = rss_kib()
        t0 = time.perf_counter()
        o = ot.OSFT(model, frozen_ratio=0.5, freeze_others=True, **kw)
        t_apply = time.perf_counter() - t0
        params = o.parameters()
        opt = torch.optim.AdamW(params, lr=1e-4)
        if side == "osft+OSFTOptimizer":
            opt = ot.OSFTOptimizer(opt, o)
        import osft

        version = osft.__version__
    # Resident high-water mark above the resident size before applying (see docstring).
    apply_peak = max(peak_kib() - before_rss, 0)
    with torch.no_grad():
        err = float((model(input_ids=ids[:1]).logits - base_logits).abs().max()
                    / base_logits.abs().max())
    trainable = sum(p.numel() for p in params)
    train_rss = rss_kib()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    train_peak = max(peak_kib() - train_rss, 0)
    return dict(side=side, version=version, apply_s=t_apply, apply_peak_mib=apply_peak / 1024,
                step_s=statistics.median(times), train_peak_mib=train_peak / 1024,
                trainable=trainable, logits_rel_err=err, torch=torch.__version__)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(one(args.side, args.steps, args.warmup)))
        return
    # One thread on both sides: torch's (set in the child) and osft's rayon pool.
    env = dict(os.environ, RAYON_NUM_THREADS="1", OMP_NUM_THREADS="1")
    load0 = os.getloadavg()[0]
    runs = {s: [] for s in SIDES}
    for r in range(args.rounds):
        order = SIDES if r % 2 == 0 else tuple(reversed(SIDES))
        for side in order:
            out = subprocess.run([sys.executable, __file__, "--side", side, "--steps",
                                  str(args.steps), "--warmup", str(args.warmup)],
                                 check=True, capture_output=True, text=True, env=env).stdout
            runs[side].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r + 1} {side}: {runs[side][-1]}", file=sys.stderr)
    med = {s: {k: statistics.median(x[k] for x in runs[s])
               for k in ("apply_s", "apply_peak_mib", "step_s", "train_peak_mib")}
           for s in SIDES}
    first = {s: runs[s][0] for s in SIDES}
    assert first["osft"]["trainable"] == first["peft"]["trainable"], first
    for s in SIDES:
        assert first[s]["logits_rel_err"] < 1e-4, (s, first[s]["logits_rel_err"])
    print(f"osft {first['osft']['version']} vs peft {first['peft']['version']} (OSF tuner), "
          f"torch {first['osft']['torch']}, 1 thread each, {args.rounds} rounds x {args.steps} "
          f"steps; trainable parameters {first['osft']['trainable']} on both; logits before "
          f"training vs the base model: osft {first['osft']['logits_rel_err']:.1e}, peft "
          f"{first['peft']['logits_rel_err']:.1e}; load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"| {'':<28} | {'osft':>9} | {'osft+OSFTOptimizer':>18} | {'osft f32 SVD':>12} | "
          f"{'peft OSF':>9} | {'osft/peft':>9} | {'osft+opt/peft':>13} | {'f32 SVD/peft':>12} |")
    print(f"|{'-' * 30}|{'-' * 11}|{'-' * 20}|{'-' * 14}|{'-' * 11}|{'-' * 11}|{'-' * 15}|"
          f"{'-' * 14}|")
    rows = [("apply OSFT (s)", "apply_s", "{:.3f}"),
            ("peak memory, applying (MiB)", "apply_peak_mib", "{:.1f}"),
            ("training step (ms)", "step_s", "{:.1f}"),
            ("peak memory, training (MiB)", "train_peak_mib", "{:.1f}")]
    for label, key, fmt in rows:
        scale = 1000 if key == "step_s" else 1
        a, b, f, c = (med[s][key] * scale for s in SIDES)
        ra = f"{a / c:.2f}" if c else "-"
        rb = f"{b / c:.2f}" if c and key != "apply_s" and key != "apply_peak_mib" else "-"
        rf = f"{f / c:.2f}" if c else "-"
        print(f"| {label:<28} | {fmt.format(a):>9} | {fmt.format(b):>18} | {fmt.format(f):>12} | "
              f"{fmt.format(c):>9} | {ra:>9} | {rb:>13} | {rf:>12} |")


if __name__ == "__main__":
    main()
