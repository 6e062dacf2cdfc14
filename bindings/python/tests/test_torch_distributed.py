"""osft.torch under torch.distributed: two CPU processes on the gloo backend (spawned), each
check against the unsharded / single-process result. Skipped without torch (or gloo)."""

import datetime
import os
import tempfile
import traceback

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not (dist.is_available() and dist.is_gloo_available()):  # pragma: no cover
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)
import torch.multiprocessing as mp  # noqa: E402

WORLD = 2


def _worker(rank, world, init_file, result_dir, check):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        globals()[check](rank, world)
        msg = "ok"
    except BaseException:  # report to the parent, which asserts
        msg = traceback.format_exc()
    try:  # let the other rank finish its collectives before tearing the group down
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=120))
    except BaseException:
        msg += "\n(barrier: the other rank failed or hung)"
    finally:
        dist.destroy_process_group()
    with open(os.path.join(result_dir, f"rank{rank}"), "w") as f:
        f.write(msg)


def run(check):
    with tempfile.TemporaryDirectory() as d:
        init = os.path.join(d, "init")
        mp.spawn(_worker, args=(WORLD, init, d, check), nprocs=WORLD, join=True)
        for r in range(WORLD):
            with open(os.path.join(d, f"rank{r}")) as f:
                msg = f.read()
            assert msg == "ok", f"rank {r}:\n{msg}"


def _basis(g, n, k, batch=()):
    q, _ = torch.linalg.qr(torch.randn(*batch, n, k, generator=g, dtype=torch.float64))
    return q


# --------------------------------------------------------------------------------------------
# Two-phase projection of row / column shards against the unsharded result.

def _assert_projected(got, want, x, tol):
    """``||got - want||_F <= tol ||x||_F``: a shard's error is part of the whole projection's,
    which conftest's project_tol bounds relative to ``||X||_F``."""
    err = float((got.double() - want).norm())
    assert err <= tol * float(x.double().norm()), (err, tol * float(x.double().norm()))


def check_sharded_projection(rank, world):
    import numpy as np
    from conftest import project_tol, unit_roundoff

    import osft
    from osft.torch import project_dense_row_sharded_, project_sharded_

    g = torch.Generator().manual_seed(0)            # same data on every rank
    n, m, k = 10, 7, 3
    u, v = _basis(g, n, k), _basis(g, m, k).T.contiguous()
    x = torch.randn(n, m, generator=g, dtype=torch.float64)
    xb = torch.randn(3, n, m, generator=g, dtype=torch.float64)
    ub = _basis(g, n, k, (3,))
    rows = torch.tensor_split(torch.arange(n), world)[rank]     # uneven split: 5/5, fine
    cols = torch.tensor_split(torch.arange(m), world)[rank]     # 4/3
    with osft.Context() as ctx:
        # Left: rows of X and U_high.
        want = x - u @ (u.T @ x)
        xl = x[rows].clone()
        project_sharded_("left", u[rows].contiguous(), xl, ctx=ctx)
        _assert_projected(xl, want[rows], x, project_tol(np.float64, n, k))
        # Right: columns of X and V_high.
        want = x - (x @ v.T) @ v
        xr = x[:, cols].clone()
        project_sharded_("right", v[:, cols].contiguous(), xr, ctx=ctx)
        _assert_projected(xr, want[:, cols], x, project_tol(np.float64, m, k))
        # A batch with one basis per entry.
        want = xb - ub @ (ub.transpose(1, 2) @ xb)
        xl = xb[:, rows].clone()
        project_sharded_("left", ub[:, rows].contiguous(), xl, ctx=ctx)
        _assert_projected(xl, want[:, rows], xb, project_tol(np.float64, n, k))
        # float32 data, float32 coefficient all-reduce.
        x32 = x.float()
        xl = x32[rows].clone()
        project_sharded_("left", u.float()[rows].contiguous(), xl, ctx=ctx)
        # Against float64 from the unrounded X and U: their rounding to float32 adds 2 u.
        tol = project_tol(np.float32, n, k) + 2 * unit_roundoff(np.float32)
        _assert_projected(xl, (x - u @ (u.T @ x))[rows], x, tol)
        # Dense row-sharded gradient, both sides.
        want = (torch.eye(n, dtype=torch.float64) - u @ u.T) @ x @ (
            torch.eye(m, dtype=torch.float64) - v.T @ v)
        gl = x[rows].clone()
        project_dense_row_sharded_(gl, u[rows].contiguous(), v, ctx=ctx)
        _assert_projected(gl, want[rows], x, project_tol(np.float64, n, k) + project_tol(np.float64, m, k))


def test_sharded_projection_matches_unsharded():
    run("check_sharded_projection")


def check_dtensor_projection(rank, world):
    import numpy as np
    from conftest import project_tol
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from osft.torch import project_dtensor_

    mesh = init_device_mesh("cpu", (world,))
    g = torch.Generator().manual_seed(1)
    n, m, k = 8, 6, 2
    u, v = _basis(g, n, k), _basis(g, m, k).T.contiguous()
    x = torch.randn(n, m, generator=g, dtype=torch.float64)
    want_l = x - u @ (u.T @ x)
    want_r = x - (x @ v.T) @ v
    # Left, rows sharded (FSDP2's Shard(0)): two-phase.
    xd = distribute_tensor(x.clone(), mesh, [Shard(0)])
    project_dtensor_(xd, distribute_tensor(u, mesh, [Shard(0)]), "left")
    _assert_projected(xd.full_tensor(), want_l, x, project_tol(np.float64, n, k))
    # Right side of a Shard(0) tensor: rows independent, replicated basis, local.
    xd = distribute_tensor(x.clone(), mesh, [Shard(0)])
    project_dtensor_(xd, distribute_tensor(v, mesh, [Replicate()]), "right")
    _assert_projected(xd.full_tensor(), want_r, x, project_tol(np.float64, m, k))
    # Right, columns sharded: two-phase.
    xd = distribute_tensor(x.clone(), mesh, [Shard(1)])
    project_dtensor_(xd, distribute_tensor(v, mesh, [Shard(1)]), "right")
    _assert_projected(xd.full_tensor(), want_r, x, project_tol(np.float64, m, k))
    # Inconsistent placements are refused.
    xd = distribute_tensor(x.clone(), mesh, [Shard(0)])
    try:
        project_dtensor_(xd, distribute_tensor(u, mesh, [Replicate()]), "left")
    except ValueError:
        pass
    else:
        raise AssertionError("row-sharded x with a replicated U_high was accepted")


def test_dtensor_projection_matches_unsharded():
    pytest.importorskip("torch.distributed.tensor")
    run("check_dtensor_projection")


# --------------------------------------------------------------------------------------------
# Decomposition partitioned across ranks by cost equals the single-process decomposition.

def _adam_tol(steps, lr, tokens, n, k):
    """Per-element bound on the difference of two Adam runs from the same start whose gradients
    are the same sums split differently (``tokens`` terms, then projected against ``k`` of ``n``
    vectors): they differ by ``delta = (tokens u + project_tol)`` of their size; Adam's step
    ``lr m/(sqrt(v) + eps)`` does not depend on the gradient's scale (for gradients well above
    eps, as here), so it moves by at most ``2 lr delta``, and each step rounds the parameter
    (``u``): ``steps (2 lr delta + u)`` of the parameters' magnitude."""
    import numpy as np
    from conftest import project_tol, unit_roundoff

    u = unit_roundoff(np.float64)
    return steps * (2 * lr * (tokens * u + project_tol(np.float64, n, k)) + u)


def _model(seed=0):
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from torch_helpers import tiny

    return tiny(seed)


def check_distributed_decomposition(rank, world):
    import osft
    import osft.torch as ot

    calls = {"n": 0}
    real = osft._lib.lib.osft_decompose

    def counting(*a):
        calls["n"] += 1
        return real(*a)

    osft._lib.lib.osft_decompose = counting
    try:
        m = _model()
        o = ot.OSFT(m, frozen_ratio=0.5)                   # distributed (2 ranks)
    finally:
        osft._lib.lib.osft_decompose = real
    ref = _model()
    o_ref = ot.OSFT(ref, frozen_ratio=0.5, distribute=False)
    assert o.partition["world_size"] == world
    owners = o.partition["owners"]
    assert set(owners) == set(range(world)), owners       # both ranks did work
    assert calls["n"] <= len(o.groups)                   # at most one call per group it owns
    for g, gr in zip(o.groups.values(), o_ref.groups.values()):
        for a in ("u_high", "s_high", "v_high", "u_low", "s_low", "v_low"):
            torch.testing.assert_close(getattr(g, a), getattr(gr, a), atol=0, rtol=0)


def test_distributed_decomposition_matches_single_process():
    run("check_distributed_decomposition")


def check_distributed_decomposition_output_dtype(rank, world):
    import osft.torch as ot

    # Factors stored in a dtype other than the weights': bfloat16 weights with float32 factors
    # (the all_reduce buffer must not round them to bfloat16), float32 with float64.
    for weights, out in ((torch.bfloat16, torch.float32), (torch.float32, torch.float64)):
        o = ot.OSFT(_model().to(weights), frozen_ratio=0.5, output_dtype=out)
        o_ref = ot.OSFT(_model().to(weights), frozen_ratio=0.5, output_dtype=out,
                        distribute=False)
        assert set(o.partition["owners"]) == set(range(world))
        for g, gr in zip(o.groups.values(), o_ref.groups.values()):
            for a in ("u_high", "s_high", "v_high", "u_low", "s_low", "v_low"):
                assert getattr(g, a).dtype == out
                torch.testing.assert_close(getattr(g, a), getattr(gr, a), atol=0, rtol=0)


def test_distributed_decomposition_output_dtype():
    run("check_distributed_decomposition_output_dtype")


# --------------------------------------------------------------------------------------------
# DDP: local gradients projected in the hooks, then all-reduced, equal the single-process run.

def check_ddp_equivalence(rank, world):
    from torch.nn.parallel import DistributedDataParallel as DDP

    import osft.torch as ot

    g = torch.Generator().manual_seed(7)
    x = torch.randn(8, 5, 12, generator=g, dtype=torch.float64)
    target = torch.randn(8, 5, 7, generator=g, dtype=torch.float64)

    def train(model, o, xs, ts, steps=5):
        opt = ot.OSFTOptimizer(torch.optim.Adam(o.parameters(), lr=1e-2), o)
        for _ in range(steps):
            opt.zero_grad()
            (model(xs) - ts).pow(2).mean().backward()
            opt.step()

    # Reference: one process, the whole batch.
    ref = _model()
    o_ref = ot.OSFT(ref, frozen_ratio=0.5, distribute=False, freeze_others=True)
    train(ref, o_ref, x, target)
    # DDP: each rank half of the batch (the mean of the two half-batch means is the full mean).
    m = _model()
    o = ot.OSFT(m, frozen_ratio=0.5, freeze_others=True)
    ddp = DDP(m)
    half = slice(rank * 4, rank * 4 + 4)
    train(ddp, o, x[half], target[half])
    from torch_helpers import dims, groups_leak_tol

    for gr, gd in zip(o_ref.groups.values(), o.groups.values()):
        n, m_, k = dims(gr)
        tol = _adam_tol(5, 1e-2, 8 * 5, max(n, m_), k)
        for a in ("u_low", "s_low", "v_low"):
            want = getattr(gr, a)
            atol = tol * max(1.0, want.abs().max().item())
            torch.testing.assert_close(getattr(gd, a), want, atol=atol, rtol=0)
    assert max(o.leakage().values()) <= groups_leak_tol(o)


def test_ddp_equivalence():
    run("check_ddp_equivalence")


# --------------------------------------------------------------------------------------------
# FSDP2 (fully_shard, CPU + gloo): the stacked group parameters are sharded along the batch
# axis, each rank projects the whole matrices of its shard, and training equals the
# single-process full-batch run.

def _fsdp_run(per_block, rank, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import osft
    import osft.torch as ot

    mesh = init_device_mesh("cpu", (world,))
    g = torch.Generator().manual_seed(11)
    x = torch.randn(8, 5, 12, generator=g, dtype=torch.float64)
    target = torch.randn(8, 5, 7, generator=g, dtype=torch.float64)
    group_by = (lambda t: t.name.split(".")[2]) if per_block else None

    def train(model, o, xs, ts, steps=4):
        opt = ot.OSFTOptimizer(torch.optim.Adam(o.parameters(), lr=1e-2), o)
        for _ in range(steps):
            opt.zero_grad()
            (model(xs) - ts).pow(2).mean().backward()
            opt.step()

    ref = _model()
    o_ref = ot.OSFT(ref, frozen_ratio=0.5, distribute=False, freeze_others=True,
                    group_by=group_by)
    train(ref, o_ref, x, target)
    want = o_ref.dense_weights()

    m = _model()
    o = ot.OSFT(m, frozen_ratio=0.5, freeze_others=True, group_by=group_by)
    if per_block:
        for layer in m.model.layers:
            fully_shard(layer, mesh=mesh)
    fully_shard(m, mesh=mesh)
    sharded = [p for p, _, _ in o.projected_parameters()]
    assert all(type(p).__name__ == "DTensor" for p in sharded), [type(p) for p in sharded]
    calls = {"n": 0}
    real = osft._lib.lib.osft_project

    def counting(*a):
        calls["n"] += 1
        return real(*a)

    osft._lib.lib.osft_project = counting
    try:
        half = slice(rank * 4, rank * 4 + 4)
        train(m, o, x[half], target[half])
    finally:
        osft._lib.lib.osft_project = real
    # Per step: gradient + update + retraction, 2 factors, for each group holding local rows.
    local_groups = sum(1 for gr in o.groups.values() if gr.u_low.to_local().shape[0] > 0)
    assert calls["n"] == 4 * 3 * 2 * local_groups, (calls["n"], local_groups)
    got = o.dense_weights()                   # gathers the shards (collective)
    from torch_helpers import dims, groups_leak_tol, leak, leak_tol

    for gr in o_ref.groups.values():
        n, m_, k = dims(gr)
        # The factors differ by _adam_tol of their magnitude; W = sum over r of u_i s_i v_i
        # (|u|, |v| <= 1) moves by at most r (2 max s + max |s| tol) of that.
        tol = _adam_tol(4, 1e-2, 8 * 5, max(n, m_), k)
        s_max = max(gr.s_high.abs().max().item(), gr.s_low.abs().max().item(), 1.0)
        for name, _, _ in gr.members:
            w = want[name]
            torch.testing.assert_close(got[name], w, atol=gr.r * 3 * s_max * tol, rtol=0)
    assert max(o.leakage().values(), default=0.0) <= groups_leak_tol(o_ref)
    # The last gradients (as Adam saw them) are projected, on this rank's shard.
    from osft.torch.model import local_batch
    for gr in o.groups.values():
        gl, start = local_batch(gr.u_low.grad, gr.batch)
        uh = gr.u_high[start:start + gl.shape[0]]
        if gl.shape[0]:
            assert gl.norm() > 0 and leak(uh, gl, "left") <= leak_tol(torch.float64, *dims(gr)) * gl.norm()
    return o


def check_fsdp2_root(rank, world):
    _fsdp_run(False, rank, world)


def check_fsdp2_per_block(rank, world):
    _fsdp_run(True, rank, world)


@pytest.mark.parametrize("check", ["check_fsdp2_root", "check_fsdp2_per_block"])
def test_fsdp2_training_matches_single_process(check):
    pytest.importorskip("torch.distributed.fsdp")
    run(check)


# --------------------------------------------------------------------------------------------
# Adaptive ranks with per-rank calibration data: importances are averaged, so every rank picks
# the same ranks — those of one process calibrating on all the data.

def check_adaptive_ranks_agree(rank, world):
    import osft.torch as ot

    def model():
        # Weights near scaled identities, so importances cos(x, W x) are positive and differ.
        mod = _model()
        with torch.no_grad():
            for i, (name, p) in enumerate(mod.named_parameters()):
                if p.dim() == 2 and "proj" in name:
                    p.mul_(0.3).add_(torch.eye(*p.shape, dtype=p.dtype) * (0.2 + 0.15 * (i % 7)))
        return mod

    from torch_helpers import data

    batches = [data(seed=20 + r, n=3) for r in range(world)]          # 15 rows each
    m = model()
    o = ot.OSFT(m, ranks="adaptive", calibration=[batches[rank]], max_samples=15,
                min_ratio=0.2, target_ratio=0.6)
    everyone = [None] * world
    dist.all_gather_object(everyone, o.ranks)
    assert all(r == everyone[0] for r in everyone)
    ref = model()
    o_ref = ot.OSFT(ref, ranks="adaptive", calibration=batches, max_samples=15 * world,
                    min_ratio=0.2, target_ratio=0.6, distribute=False)
    assert o.ranks == o_ref.ranks
    assert len(set(o.ranks.values())) > 1


def test_adaptive_ranks_agree_across_ranks():
    run("check_adaptive_ranks_agree")
