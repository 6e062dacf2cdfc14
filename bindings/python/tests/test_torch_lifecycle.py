"""osft.torch lifecycle: refused arguments leave the model untouched, the task sequence
(next_task), the merged state dict, freeze_others, a forward that raises, and the workflow
on a GPU. Skipped without torch."""

import numpy as np
import pytest
from conftest import CUDA_SKIP, GPU_SKIP, svd_tol
from torch_helpers import (
    TinyLlama,
    data,
    dims,
    f64,
    groups_leak_tol,
    leak,
    leak_tol,
    max_rel_err,
    model_tol,
    rel_err,
    tiny,
    weight_tol,
)

import osft

torch = pytest.importorskip("torch")
nn = torch.nn
ot = pytest.importorskip("osft.torch")


def test_invalid_arguments_leave_model_untouched():
    m = tiny()
    before = {n: p.clone() for n, p in m.named_parameters()}
    for kw in (dict(mode="lora"), dict(frozen_ratio=0.5, unfreeze_rank_ratio=0.5),
               dict(frozen_ratio=1.5), dict(ranks="adaptive"), dict(ranks="magic"),
               dict(rank_pattern={"q_proj": 99})):
        with pytest.raises((ValueError, TypeError)):
            ot.OSFT(m, **kw)
    assert {n: p for n, p in m.named_parameters()}.keys() == before.keys()
    for n, p in m.named_parameters():
        assert torch.equal(p, before[n])
    o = ot.OSFT(m)
    with pytest.raises(ValueError, match="already applied"):
        ot.OSFT(m)
    o.merge()


def test_invalid_arguments_leave_no_state_dict_hooks():
    m = tiny()
    regs = ("_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
            "_load_state_dict_post_hooks")
    before = {r: dict(getattr(m, r)) for r in regs}
    plain = m.state_dict()
    for kw in (dict(frozen_ratio=1.5), dict(ranks="adaptive"), dict(rank_pattern={"q_proj": 99})):
        with pytest.raises(ValueError):
            ot.OSFT(m, **kw)
    assert {r: dict(getattr(m, r)) for r in regs} == before
    assert list(m.state_dict()) == list(plain)
    o = ot.OSFT(m)          # a successful OSFT does install its hooks (the check above can fail)
    assert any(dict(getattr(m, r)) != before[r] for r in regs)
    o.merge()


def test_freeze_others():
    m = tiny()
    o = ot.OSFT(m, freeze_others=True)
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in o.parameters()}
    assert not m.lm_head.weight.requires_grad and not m.model.layers[0].self_attn.q_proj.bias.requires_grad
    # Invalid arguments freeze nothing.
    m2 = tiny()
    with pytest.raises(ValueError):
        ot.OSFT(m2, freeze_others=True, rank_pattern={"q_proj": 99})
    assert all(p.requires_grad for p in m2.parameters())


def test_forward_that_raises_leaves_no_stale_weight():
    """The per-forward weight cache is dropped even when the forward raises: reading the
    weight afterwards reflects the current factors, not the matrix of the failed call."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 6, bias=False)).double()
    o = ot.OSFT(m, targets=["0"], frozen_ratio=0.5)
    with pytest.raises(RuntimeError):
        m(torch.randn(4, 5, dtype=torch.float64))          # wrong width: F.linear raises
    g = next(iter(o.groups.values()))
    with torch.no_grad():
        g.s_low.mul_(2.0)
    w = f64(m[0].weight)
    want = f64(g.u_high[0]) @ torch.diag(f64(g.s_high[0])) @ f64(g.v_high[0]) \
        + f64(g.u_low[0]) @ torch.diag(f64(g.s_low[0])) @ f64(g.v_low[0])
    assert rel_err(w, want) <= weight_tol(torch.float64, 6, 6)     # the rebuild's GEMMs' rounding


# --------------------------------------------------------------------------------------------
# Task sequence.

def _frozen_part(o, name):
    g, off = next((g, off) for g in o.groups.values() for n, off, _ in g.members if n == name)
    return f64(g.u_high[off]) @ torch.diag(f64(g.s_high[off])) @ f64(g.v_high[off])


def _frozen_s(o, name):
    return next(f64(g.s_high[off]) for g in o.groups.values() for n, off, _ in g.members
                if n == name)


def test_task_sequence_grows_frozen_rank():
    m = tiny()
    x = data()
    o = ot.OSFT(m, frozen_ratio=0.25)
    k0 = dict(o.ranks)
    opt = ot.OSFTOptimizer(torch.optim.Adam(o.parameters(), lr=1e-2), o)
    for _ in range(10):
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()
    y_before = m(x).detach()
    w_before = o.dense_weights()
    old_uh = {name: f64(g.u_high[off]) for g in o.groups.values() for name, off, _ in g.members}
    # Per target: the trained part's singular values and the smallest frozen one.
    low_s = {n: torch.linalg.svdvals(f64(w) - _frozen_part(o, n)) for n, w in w_before.items()}
    s_min = {n: float(_frozen_s(o, n).min()) for n in w_before}
    k1 = o.next_task(frozen_ratio=0.5)
    assert o.task == 1
    assert all(k1[n] > k0[n] for n in k0)
    # Re-decomposition does not change the function.
    assert max_rel_err(m(x), y_before) <= model_tol(torch.float64, 14, 20, 20, 20)
    for n, w in o.dense_weights().items():
        assert rel_err(w, w_before[n]) <= weight_tol(torch.float64, *w.shape)
    # The new U_high is the top singular subspace of the merged weight: its singular values
    # within Weyl's bound (both SVDs' backward errors), the subspace within Wedin's (that bound
    # over the gap after s_k).
    for g in o.groups.values():
        name, off, _ = g.members[0]
        u, s, vt = np.linalg.svd(w_before[name].numpy())
        e = 2 * svd_tol(*w_before[name].shape, np.float64, np.float64) * np.linalg.norm(s)
        assert np.abs(g.s_high[off].detach().numpy() - s[:g.k]).max() <= e
        p_ref = u[:, :g.k] @ u[:, :g.k].T
        uh = g.u_high[off].detach().numpy()
        assert np.linalg.norm(uh @ uh.T - p_ref, 2) <= e / (s[g.k - 1] - s[g.k])
    # Where fewer than k1 - k0 trained singular values exceed the smallest frozen one, the new
    # frozen subspace contains the previous one (the documented condition).
    below = {n: int((low_s[n] > s_min[n]).sum()) <= k1[n] - k0[n] for n in k0}
    assert sum(below.values()) >= 4, below
    for g in o.groups.values():
        for name, off, _ in g.members:
            uh, uo = f64(g.u_high[off]), old_uh[name]
            if below[name]:
                # Exact containment up to the SVD's error and the trained part's leakage into
                # the old frozen subspace, over the gap after the new s_k (Wedin).
                s = torch.linalg.svdvals(f64(w_before[name]))
                e = (2 * svd_tol(*w_before[name].shape, np.float64, np.float64)
                     + groups_leak_tol(o)) * s.norm() / (s[g.k - 1] - s[g.k])
                assert (uo - uh @ (uh.T @ uo)).norm() / uo.norm() <= e, name
    # grow_only: a smaller ratio keeps the previous ranks.
    k2 = o.next_task(frozen_ratio=0.1)
    assert k2 == k1 and o.task == 2
    k3 = o.next_task(frozen_ratio=0.1, grow_only=False)
    assert all(k3[n] < k1[n] for n in k1)
    o.merge()


def test_next_task_invalid_arguments_keep_the_current_task():
    m = tiny()
    o = ot.OSFT(m, frozen_ratio=0.5)
    groups = list(o.groups)
    for kw in (dict(frozen_ratio=2.0), dict(rank_pattern={"q_proj": -1}), dict(ranks="adaptive"),
               dict(frozen_ratio=0.5, unfreeze_rank_ratio=0.5), dict(ranks="x")):
        with pytest.raises((ValueError, TypeError)):
            o.next_task(**kw)
    assert list(o.groups) == groups and o.task == 0
    m(data()).sum().backward()                 # still the OSFT'd model
    assert all(p.grad is not None for p in o.parameters())


# --------------------------------------------------------------------------------------------
# Merged weights, and the workflow on a GPU.

def test_merged_state_dict_matches_plain_model():
    m = tiny()
    plain = m.state_dict()
    plain = {k: v.clone() for k, v in plain.items()}
    o = ot.OSFT(m, frozen_ratio=0.5)
    # model.state_dict() is the plain model's, in its key order; the raw one on request.
    assert list(m.state_dict()) == list(plain)
    o.plain_state_dict = False
    assert any(".osft_g" in k for k in m.state_dict())
    o.plain_state_dict = True
    sd = o.merged_state_dict()
    assert set(sd) == set(plain)
    for k, v in plain.items():
        if k in o.ranks:                        # a target: rebuilt from its factors
            assert rel_err(sd[k], v) <= weight_tol(torch.float64, *v.shape), k
        else:                                   # untouched: the same values
            assert torch.equal(sd[k], v), k
    # Loads into a fresh plain model.
    fresh = tiny(seed=5)
    fresh.load_state_dict(sd)
    x = data()
    assert max_rel_err(fresh(x), m(x)) <= model_tol(torch.float64, 14, 20, 20, 20)


def test_cuda_model_workflow():
    if not torch.cuda.is_available():
        pytest.skip(f"{GPU_SKIP} (no CUDA device visible to torch)")
    try:
        osft.Context("cuda").close()
    except osft.BackendUnavailableError as e:
        pytest.skip(f"{CUDA_SKIP} although torch sees a GPU: {e.message}")
    torch.manual_seed(0)
    m = TinyLlama().cuda()
    x = data().float().cuda()
    y0 = m(x).detach()
    w0 = {n: f64(p).cpu() for n, p in m.named_parameters()}
    o = ot.OSFT(m, frozen_ratio=0.5)
    assert all(g.u_high.is_cuda for g in o.groups.values())
    assert max_rel_err(m(x), y0) <= model_tol(torch.float32, 14, 20, 20, 20)
    for name, w in o.dense_weights().items():
        assert rel_err(w.cpu(), w0[name]) <= weight_tol(torch.float32, *w.shape)
    opt = ot.OSFTOptimizer(torch.optim.Adam(o.parameters(), lr=1e-2), o)
    for _ in range(20):
        opt.zero_grad()
        (m(x) - 1).pow(2).mean().backward()
        opt.step()
    torch.cuda.synchronize()
    assert max(o.leakage().values()) <= groups_leak_tol(o, torch.float32)
    for p, side, g in o.projected_parameters():
        b = g.u_high if side == "left" else g.v_high
        assert leak(b, p.grad, side) <= leak_tol(torch.float32, *dims(g)) * p.grad.norm()
