"""osft.torch's decomposition precision (``upcast_dtype`` / ``output_dtype``) and its two
forwards (``forward="dense"`` / ``"factorised"``), against float64 references computed here.
Skipped without torch."""

import numpy as np
import pytest
from conftest import svd_tol, unit_roundoff

torch = pytest.importorskip("torch")
nn = torch.nn
ot = pytest.importorskip("osft.torch")
torch.set_num_threads(1)

EPS32 = float(np.finfo(np.float32).eps)   # 1.19e-7


def forward_tol(dtype, inner, n, m):
    """Bound on ``max |y - y_plain| / max |y_plain|`` for a forward in ``dtype`` through weights
    rebuilt from float64-SVD factors stored in ``dtype``: chained GEMMs of ``inner`` summed
    lengths accumulate ``4 inner u`` (as conftest's project_tol), and the rebuilt ``n x m``
    weights differ from the plain ones by ``svd_tol(n, m, float64, dtype)``."""
    dt = str(dtype).split(".")[-1]
    return 4 * inner * unit_roundoff(dt) + svd_tol(n, m, np.float64, dt)


def mlp(seed, d, f, dtype):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(d, f), nn.Tanh(), nn.Linear(f, d, bias=False))
    return m.to(dtype)


def factors_error(g):
    """Relative reconstruction error of each group matrix and the orthonormality defect of the
    concatenated factors, in float64."""
    d = lambda t: t.detach().double()  # noqa: E731
    u = torch.cat([d(g.u_high), d(g.u_low)], -1)
    v = torch.cat([d(g.v_high), d(g.v_low)], -2)
    s = torch.cat([d(g.s_high), d(g.s_low)], -1)
    eye = torch.eye(u.shape[-1], dtype=torch.float64)
    orth = max((u.transpose(-1, -2) @ u - eye).abs().max().item(),
               (v @ v.transpose(-1, -2) - eye).abs().max().item())
    return (u * s.unsqueeze(-2)) @ v, orth


@pytest.mark.parametrize("shape", [(24, 40), (64, 48), (96, 96)])
def test_upcast_dtype_float64_gives_factors_at_float32_rounding(shape):
    """float32 weights decomposed in float64 and stored in float32: every factor is the float64
    SVD rounded once (relative error <= eps/2 per entry), so reconstruction error and
    orthonormality defect stay within 2 eps (measured: 0.4 eps). A float32 SVD accumulates
    rounding over its sweeps (measured: 15-100 eps at these sizes); its bound is a sanity check,
    20 eps sqrt(max(N, M))."""
    d, f = shape
    for upcast, bound in ((torch.float64, 2 * EPS32),
                          (torch.float32, 20 * EPS32 * np.sqrt(max(d, f)))):
        m = mlp(0, d, f, torch.float32)
        w = {n: p.detach().double().clone() for n, p in m.named_parameters()}
        o = ot.OSFT(m, targets=["0", "2"], frozen_ratio=0.5, upcast_dtype=upcast)
        for g in o.groups.values():
            assert g.u_high.dtype == torch.float32 and g.compute == {
                torch.float64: "f64", torch.float32: "f32"}[upcast]
            rec, orth = factors_error(g)
            ref = torch.stack([w[name] for name, _, _ in g.members])
            err = ((rec - ref).norm(dim=(-2, -1)) / ref.norm(dim=(-2, -1))).max().item()
            assert err < bound and orth < bound, (upcast, err, orth, bound)


def test_output_dtype_keeps_factors_in_another_dtype():
    m = mlp(1, 16, 24, torch.bfloat16)
    x = torch.randn(5, 16).to(torch.bfloat16)
    o = ot.OSFT(m, targets=["0", "2"], frozen_ratio=0.5, output_dtype=torch.float32)
    g = next(iter(o.groups.values()))
    assert g.u_low.dtype == torch.float32 and g.weight_dtype == torch.bfloat16
    assert m(x).dtype == torch.bfloat16                     # the layers compute in bf16
    assert m[0].weight.dtype == torch.bfloat16
    assert all(w.dtype == torch.bfloat16 for w in o.dense_weights().values())
    assert o.merged_state_dict()["0.weight"].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="upcast_dtype"):
        ot.OSFT(mlp(1, 4, 4, torch.float32), targets=["0"], upcast_dtype=torch.float16)
    with pytest.raises(ValueError, match="output_dtype"):
        ot.OSFT(mlp(1, 4, 4, torch.float32), targets=["0"], output_dtype=torch.int8)
    with pytest.raises(ValueError, match="forward"):
        ot.OSFT(mlp(1, 4, 4, torch.float32), targets=["0"], forward="fast")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(12, 20), (32, 8)])
def test_dense_and_factorised_forwards_agree(dtype, shape):
    """Outputs and the gradients of every trainable factor agree between the two forwards, and
    with the plain model's output, within :func:`forward_tol` of the two layers (inner lengths
    d + f; measured: under 1 (d + f) u)."""
    d, f = shape
    tol = forward_tol(dtype, d + f, d, f)
    x = torch.randn(3, 7, d, generator=torch.Generator().manual_seed(2)).to(dtype)
    plain = mlp(4, d, f, dtype)
    want = plain(x)
    outs, grads = {}, {}
    for forward in ("dense", "factorised"):
        m = mlp(4, d, f, dtype)
        o = ot.OSFT(m, targets=["0", "2"], frozen_ratio=0.4, forward=forward)
        assert ("_osft_factorised" in m[0].__dict__) == (forward == "factorised")
        y = m(x)
        (y.pow(2).sum()).backward()
        outs[forward] = y.detach()
        grads[forward] = [p.grad.clone() for p in o.parameters()]
    scale = want.abs().max().item()
    assert (outs["dense"] - want).abs().max() <= tol * scale
    assert (outs["factorised"] - outs["dense"]).abs().max() <= tol * scale
    for a, b in zip(grads["dense"], grads["factorised"]):
        assert (a - b).abs().max() <= tol * max(1.0, a.abs().max().item())


def test_factorised_forward_serves_plain_linear_only():
    """A module whose forward is not nn.Linear's (GPT-2's Conv1D, a subclass with its own
    forward) rebuilds its weight; dense-mode groups too."""
    class MyLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    root = nn.Sequential(nn.Linear(6, 6), MyLinear(6, 6))
    ot.OSFT(root, targets=["0", "1"], frozen_ratio=0.5, forward="factorised")
    assert "_osft_factorised" in root[0].__dict__
    assert "_osft_factorised" not in root[1].__dict__
    dense = nn.Sequential(nn.Linear(6, 6))
    ot.OSFT(dense, targets=["0"], frozen_ratio=0.5, mode="dense", forward="factorised")
    assert "_osft_factorised" not in dense[0].__dict__


def test_auto_forward_chooses_by_saved_memory():
    """forward="auto": factorised while 2 T (R-k) < N M + N (R-k) (8x8, k=4: T < 12 rows), dense
    from there on; the outputs agree with the plain layer either way."""
    torch.manual_seed(0)
    plain = nn.Linear(8, 8).double()
    m = nn.Sequential(nn.Linear(8, 8).double())
    m[0].load_state_dict(plain.state_dict())
    o = ot.OSFT(m, targets=["0"], frozen_ratio=0.5, forward="auto")
    g = next(iter(o.groups.values()))
    calls = []
    real = g.linear
    g.linear = lambda *a: calls.append(1) or real(*a)
    for rows, factorised in ((11, True), (12, False), (40, False)):
        calls.clear()
        x = torch.randn(rows, 8, dtype=torch.float64)
        want = plain(x)
        assert (m(x) - want).abs().max() < forward_tol(torch.float64, 8, 8, 8) * want.abs().max()
        assert bool(calls) == factorised, rows
