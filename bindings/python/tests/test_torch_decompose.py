"""osft.torch decomposition: one batched decompose per shape group, reconstruction and
singular values against float64 references, float32 / bfloat16 models, MoE expert tensors,
modules with two targets, and the cost partitioning of the decomposition across ranks.
Skipped without torch."""

import numpy as np
import pytest
from conftest import svd_tol
from torch_helpers import (
    Counter,
    TinyLlama,
    data,
    dims,
    f64,
    leak,
    leak_tol,
    max_rel_err,
    model_tol,
    rel_err,
    tiny,
    weight_tol,
)

torch = pytest.importorskip("torch")
nn = torch.nn
ot = pytest.importorskip("osft.torch")


def test_decompose_batched_and_reconstructs(monkeypatch):
    m = tiny()
    x = data()
    w0 = {n: f64(p) for n, p in m.named_parameters()}
    y0 = m(x).detach()
    c = Counter(monkeypatch, "osft_decompose", "osft_svd", "osft_reconstruct")
    o = ot.OSFT(m, frozen_ratio=0.5)
    # 14 targets in 3 shapes (12x12, 20x12, 12x20): exactly 3 decompositions.
    assert c.n["osft_decompose"] == 3 and len(o.groups) == 3
    assert sorted(g.batch for g in o.groups.values()) == [2, 4, 8]
    # 14 linear layers of at most 20 x 20, inner lengths at most 20.
    y_tol = model_tol(torch.float64, 14, 20, 20, 20)
    assert max_rel_err(m(x), y0) <= y_tol
    for t in o.targets:
        w = f64(getattr(t.module, t.attr))
        assert rel_err(w, w0[t.name]) <= weight_tol(torch.float64, *w.shape)
    for g in o.groups.values():
        n, m_, _ = dims(g)
        for name, off, _cnt in g.members:
            s_ref = np.linalg.svd(w0[name].numpy(), compute_uv=False)
            s = torch.cat([g.s_high[off], g.s_low[off]]).detach().numpy()
            # Weyl: each s_i moves by at most the backward error; s_ref carries its own.
            s_tol = 2 * svd_tol(n, m_, np.float64, np.float64) * w0[name].norm().item()
            assert np.abs(s - s_ref).max() <= s_tol
            u = torch.cat([g.u_high[off], g.u_low[off]], 1).detach()
            assert np.abs((u.T @ u).numpy() - np.eye(g.r)).max() <= svd_tol(n, m_, np.float64, np.float64)
    dense = o.dense_weights()
    assert c.n["osft_reconstruct"] == 3
    for name, w in dense.items():
        assert rel_err(w, w0[name]) <= weight_tol(torch.float64, *w.shape)
    o.merge()
    assert [n for n, _ in m.named_parameters()] == list(w0)
    assert type(m.model.layers[0].mlp.up_proj) is nn.Linear
    assert max_rel_err(m(x), y0) <= y_tol


def test_float32_and_bfloat16_models():
    for dt in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        m = TinyLlama().to(dt)
        w0 = {n: f64(p) for n, p in m.named_parameters()}
        o = ot.OSFT(m, frozen_ratio=0.5)
        assert all(g.u_high.dtype == dt for g in o.groups.values())
        for name, w in o.dense_weights().items():
            err = rel_err(w, w0[name])
            assert err <= weight_tol(dt, *w.shape), (dt, name, err)
        m(data().to(dt)).float().pow(2).mean().backward()
        for p, _side, _g in o.projected_parameters():
            assert p.grad is not None and p.grad.dtype == dt


# --------------------------------------------------------------------------------------------
# MoE: 3-D expert tensors are a strided batch, and share a group with same-shape 2-D weights.

class Experts(nn.Module):
    def __init__(self, e, n, m):
        super().__init__()
        self.down_proj = nn.Parameter(torch.randn(e, n, m, dtype=torch.float64) * 0.3)

    def forward(self, x):                      # x: (e, tokens, m)
        return torch.einsum("enm,etm->etn", self.down_proj, x)


def test_moe_expert_tensor(monkeypatch):
    torch.manual_seed(4)
    root = nn.Module()
    root.mlp = nn.Module()
    root.mlp.experts = Experts(3, 8, 8)
    root.self_attn = nn.Module()
    root.self_attn.q_proj = nn.Linear(8, 8, bias=False).double()
    w0 = {n: f64(p) for n, p in root.named_parameters()}
    x = torch.randn(3, 5, 8, dtype=torch.float64)

    def fwd():
        return root.mlp.experts(x).pow(2).sum() + root.self_attn.q_proj(x).pow(2).sum()

    y0 = fwd().item()
    c = Counter(monkeypatch, "osft_decompose", "osft_project")
    o = ot.OSFT(root, targets=["experts.down_proj", "q_proj"], frozen_ratio=0.5)
    assert c.n["osft_decompose"] == 1 and len(o.groups) == 1
    g = next(iter(o.groups.values()))
    assert g.batch == 4 and g.members == [("mlp.experts.down_proj", 0, 3),
                                          ("self_attn.q_proj.weight", 3, 1)]
    assert root.mlp.experts.down_proj.shape == (3, 8, 8)
    # A sum of squares of two 8 x 8 layers' outputs: twice their relative bound.
    assert abs(fwd().item() - y0) <= 2 * model_tol(torch.float64, 2, 8, 8, 8) * abs(y0)
    fwd().backward()
    assert c.n["osft_project"] == 2
    uh, gu = f64(g.u_high), f64(g.u_low.grad)
    assert leak(uh, gu, "left") <= leak_tol(torch.float64, *dims(g)) * gu.norm() and gu[:3].norm() > 0
    o.merge()
    assert rel_err(root.mlp.experts.down_proj, w0["mlp.experts.down_proj"]) <= weight_tol(torch.float64, 8, 8)
    assert isinstance(root.mlp.experts.down_proj, nn.Parameter)


class TwoExperts(nn.Module):
    """An MoE experts module with two 3-D targets (as transformers' Mixtral/Qwen MoE)."""

    def __init__(self, e=2, h=6, i=4):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(e, 2 * i, h, dtype=torch.float64))
        self.down_proj = nn.Parameter(torch.randn(e, h, i, dtype=torch.float64))

    def forward(self, x):                       # x: (e, t, h)
        gate, up = torch.einsum("eih,eth->eti", self.gate_up_proj, x).chunk(2, dim=-1)
        return torch.einsum("ehi,eti->eth", self.down_proj, torch.tanh(gate) * up)


def test_module_with_two_targets():
    torch.manual_seed(6)
    root = nn.Module()
    root.experts = TwoExperts()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    y0 = root.experts(x).detach()
    w0 = {n: f64(p) for n, p in root.named_parameters()}
    o = ot.OSFT(root, targets=["experts.gate_up_proj", "experts.down_proj"], frozen_ratio=0.5)
    assert len(o.groups) == 2
    assert max_rel_err(root.experts(x), y0) <= model_tol(torch.float64, 2, 8, 8, 6)
    for n in ("gate_up_proj", "down_proj"):
        w = f64(getattr(root.experts, n))
        assert rel_err(w, w0[f"experts.{n}"]) <= weight_tol(torch.float64, *w.shape[-2:])
    root.experts(x).sum().backward()
    assert all(p.grad is not None for p in o.parameters())
    o.merge()
    assert [n for n, _ in root.named_parameters()] == list(w0)
    assert type(root.experts) is TwoExperts


# --------------------------------------------------------------------------------------------
# Cost partitioning.

def test_partition_by_cost_balanced():
    from osft.torch.distributed import decomposition_cost, partition_by_cost

    # A Llama-like mix: many small attention matrices, a few big MLP ones.
    shapes = [(64, 64)] * 24 + [(172, 64)] * 6 + [(64, 172)] * 6
    costs = [decomposition_cost(*s) for s in shapes]
    for world in (2, 3, 4, 8):
        owners = partition_by_cost(costs, world)
        loads = np.zeros(world)
        for c, o in zip(costs, owners):
            loads[o] += c
        assert loads.max() <= sum(costs) / world + max(costs)          # LPT bound
        by_count = np.zeros(world)                                      # round robin by count
        for i, c in enumerate(costs):
            by_count[i % world] += c
        assert loads.max() <= by_count.max()
        assert owners == partition_by_cost(costs, world)               # deterministic
    # Optimal on a small instance (brute force).
    import itertools
    small = [7, 5, 4, 3, 3, 2]
    best = min(max(sum(c for c, a in zip(small, assign) if a == r) for r in range(2))
               for assign in itertools.product(range(2), repeat=len(small)))
    owners = partition_by_cost(small, 2)
    got = max(sum(c for c, o in zip(small, owners) if o == r) for r in range(2))
    assert got <= best * 4 / 3
    assert partition_by_cost([], 3) == []
    with pytest.raises(ValueError):
        partition_by_cost([1.0], 0)
    with pytest.raises(ValueError):
        partition_by_cost([-1.0], 2)
    assert decomposition_cost(4096, 11008) == 4096 * 11008 * 4096
