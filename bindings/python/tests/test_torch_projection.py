"""osft.torch projection: gradients projected in autograd hooks against (I - U U^T) G computed
in float64, dense mode, and OSFTOptimizer's update projection and retraction (Adam with and
without it, low precision, closures, replaced or swapped parameters). Skipped without torch."""

import numpy as np
import pytest
from conftest import project_tol
from torch_helpers import Counter, TinyLlama, data, dims, f64, groups_leak_tol, leak, leak_tol, tiny

torch = pytest.importorskip("torch")
nn = torch.nn
ot = pytest.importorskip("osft.torch")


# --------------------------------------------------------------------------------------------
# Gradient projection.

def test_gradients_projected_against_float64_reference(monkeypatch):
    x = data()
    ref_model = tiny()
    o_ref = ot.OSFT(ref_model, frozen_ratio=0.5, project_in_backward=False)
    ref_model(x).pow(2).mean().backward()
    raw = {id(p): f64(p.grad) for p, _, _ in o_ref.projected_parameters()}
    assert all(r.norm() > 0 for r in raw.values())

    m = tiny()
    c = Counter(monkeypatch, "osft_project")
    o = ot.OSFT(m, frozen_ratio=0.5)
    m(x).pow(2).mean().backward()
    assert c.n["osft_project"] == 6          # 3 groups x (U side, V side), 14 layers
    for (p, side, g), (pr, _, _gr) in zip(o.projected_parameters(), o_ref.projected_parameters()):
        uh, vh = f64(g.u_high), f64(g.v_high)
        G = raw[id(pr)]
        want = G - uh @ (uh.transpose(1, 2) @ G) if side == "left" else G - (G @ vh.transpose(1, 2)) @ vh
        n, m_, k = dims(g)
        assert (f64(p.grad) - want).norm() <= project_tol(np.float64, max(n, m_), k) * G.norm()
        assert leak(uh if side == "left" else vh, p.grad, side) <= leak_tol(torch.float64, n, m_, k) * G.norm()
    # S_low's gradient is not projected: the same computation as the reference's, bit for bit.
    for g, gr in zip(o.groups.values(), o_ref.groups.values()):
        assert torch.equal(g.s_low.grad, gr.s_low.grad)
    # The explicit form: 6 calls, the same libosft calls on the same inputs, bit for bit.
    c.n["osft_project"] = 0
    assert o_ref.project_gradients() == 6 and c.n["osft_project"] == 6
    for (p, _, _), (pr, _, _) in zip(o.projected_parameters(), o_ref.projected_parameters()):
        assert torch.equal(pr.grad, p.grad)


def test_dense_mode_projects_both_sides(monkeypatch):
    x = data()
    m = tiny()
    w0 = {n: f64(p) for n, p in m.named_parameters()}
    raw_model = tiny()
    raw_model(x).pow(2).mean().backward()
    raw = {n: f64(p.grad) for n, p in raw_model.named_parameters() if p.grad is not None}
    c = Counter(monkeypatch, "osft_project")
    o = ot.OSFT(m, frozen_ratio=0.5, mode="dense")
    m(x).pow(2).mean().backward()
    assert c.n["osft_project"] == 3
    for g in o.groups.values():
        uh, vh, G = f64(g.u_high), f64(g.v_high), f64(g.weight.grad)
        # Both sides projected in turn: twice one side's bound, against the raw gradients' norm.
        tol = 2 * leak_tol(torch.float64, *dims(g)) * torch.stack([raw[n] for n, _, _ in g.members]).norm()
        assert leak(uh, G, "left") <= tol and leak(vh, G, "right") <= tol
        assert G.norm() > 0
    opt = ot.OSFTOptimizer(torch.optim.Adam(o.parameters(), lr=1e-2), o)
    for _ in range(30):
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()
    for name, w in o.dense_weights().items():
        g, off, _ = next((g, off, cnt) for g in o.groups.values()
                         for n, off, cnt in g.members if n == name)
        d = f64(w) - w0[name]
        uh, vh = f64(g.u_high[off]), f64(g.v_high[off])
        assert d.norm() > 1e-3
        # Every step's update lies in the complement; the weight's own rounding (u |W| per
        # step, 30 steps) is the part of d that can leak.
        tol = 2 * leak_tol(torch.float64, *dims(g)) + 30 * 2.0**-53 * w0[name].norm() / d.norm()
        assert (uh.T @ d).norm() / d.norm() <= tol and (d @ vh.T).norm() / d.norm() <= tol


def test_optimizer_closure_and_unhooked_gradients():
    # project_in_backward=False: the wrapper projects .grad itself, also inside a closure.
    m = tiny()
    o = ot.OSFT(m, project_in_backward=False)
    x = data()
    inner = torch.optim.SGD(o.parameters(), lr=0.1)
    opt = ot.OSFTOptimizer(inner, o, project_update=False, retract=False)
    seen = []
    orig_step = inner.step

    def spy(closure=None):
        out = orig_step(closure)
        # The gradients SGD used (after the closure ran) were projected.
        for p, side, g in o.projected_parameters():
            b, gr = f64(g.u_high if side == "left" else g.v_high), f64(p.grad)
            leak = b.transpose(1, 2) @ gr if side == "left" else gr @ b.transpose(1, 2)
            # Relative to the projected gradient (at most the raw one's norm): stricter.
            seen.append(float(leak.norm() / gr.norm()) / leak_tol(torch.float64, *dims(g)))
        return out

    inner.step = spy

    def closure():
        opt.zero_grad()
        loss = m(x).pow(2).mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_tensor(loss) and seen and max(seen) <= 1
    # SGD on projected gradients never leaves the subspace, even without update projection.
    assert max(o.leakage().values()) <= groups_leak_tol(o)


# --------------------------------------------------------------------------------------------
# Adam leakage: the optimizer wrapper keeps U_low orthogonal to U_high; a control leaks.

def _train_adam(wrap: bool, steps=150):
    m = tiny()
    o = ot.OSFT(m, frozen_ratio=0.5)
    inner = torch.optim.Adam(o.parameters(), lr=2e-2)
    opt = ot.OSFTOptimizer(inner, o) if wrap else inner
    x = data()
    for _ in range(steps):
        opt.zero_grad()
        (m(x) - 1).pow(2).mean().backward()
        opt.step()
    worst = 0.0
    for g in o.groups.values():
        uh, ul = f64(g.u_high), f64(g.u_low)
        vh, vl = f64(g.v_high), f64(g.v_low)
        worst = max(worst, float(((uh.transpose(1, 2) @ ul).norm(dim=(1, 2))
                                  / ul.norm(dim=(1, 2))).max()),
                    float(((vl @ vh.transpose(1, 2)).norm(dim=(1, 2)) / vl.norm(dim=(1, 2))).max()))
    return worst, o


def test_update_projection_keeps_u_low_orthogonal_under_adam():
    leak, o = _train_adam(wrap=True)
    assert leak <= groups_leak_tol(o)             # the retraction's last projection
    assert max(o.leakage().values()) <= groups_leak_tol(o)      # osft.leakage agrees
    control, oc = _train_adam(wrap=False)
    assert control > 1e-3, control                # gradient projection alone leaks under Adam
    # osft.leakage and the float64 computation above: the same ratio through two GEMMs and
    # norms, each within project_tol of it (20 x 12 factors, 6 frozen vectors at most).
    assert max(oc.leakage().values()) == pytest.approx(control, rel=2 * project_tol(np.float64, 20, 12))


@pytest.mark.parametrize("dtype,bound", [("float32", 1e-6), ("bfloat16", 5e-3)])
def test_update_projection_low_precision(dtype, bound):
    """Training in float32 / bfloat16: the wrapped optimizer's leakage stays at the dtype's
    rounding; Adam with gradient projection alone drifts far past it."""
    dt = getattr(torch, dtype)
    leaks = {}
    for wrap in (True, False):
        torch.manual_seed(0)
        m = TinyLlama().to(dt)
        o = ot.OSFT(m, frozen_ratio=0.5)
        inner = torch.optim.Adam(o.parameters(), lr=1e-2, eps=1e-4)
        opt = ot.OSFTOptimizer(inner, o) if wrap else inner
        x = data().to(dt)
        for _ in range(60):
            opt.zero_grad()
            (m(x).float() - 1).pow(2).mean().backward()
            opt.step()
        leaks[wrap] = max(o.leakage().values())
    assert leaks[True] < bound, leaks
    assert leaks[False] > 0.05, leaks


def test_optimizer_wrapper_is_an_optimizer():
    m = tiny()
    o = ot.OSFT(m)
    opt = ot.OSFTOptimizer(torch.optim.AdamW(m.parameters(), lr=1e-2), o)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    m(data()).pow(2).mean().backward()
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-3)
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    with pytest.raises(TypeError):
        ot.OSFTOptimizer(object(), o)
    with pytest.warns(UserWarning, match="none of OSFT"):
        ot.OSFTOptimizer(torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=1), o)


def test_osft_optimizer_refuses_replaced_params():
    """DeepSpeed's ZeRO wrappers put flat fp32 partitions into a client optimizer's groups; an
    OSFTOptimizer stepping those would project nothing, so its step refuses."""
    m = tiny()
    o = ot.OSFT(m)
    opt = ot.OSFTOptimizer(torch.optim.AdamW(o.parameters(), lr=1e-2), o)
    flat = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    opt.param_groups[0]["params"] = [flat]
    with pytest.raises(RuntimeError, match="no longer OSFT's"):
        opt.step()


def test_replaced_parameter_with_reused_id_is_still_projected():
    """A wrapper that replaces a hooked parameter (as FSDP2's fully_shard does) frees the old
    object; CPython may give the new one the same id(). Its gradient has no hook and must still
    be projected by project_unhooked_gradients (an id-only bookkeeping skipped it)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 6, bias=False)).double()
    o = ot.OSFT(m, targets=["0"], frozen_ratio=0.5)
    g = next(iter(o.groups.values()))
    old_id = id(g.u_low)
    datas = [g.u_low.detach().clone() for _ in range(256)]
    g.u_low = None                              # the old parameter is freed here
    held = []
    for d in datas:                             # new parameters until one reuses the old id
        new = nn.Parameter(d)
        if id(new) == old_id:
            break
        held.append(new)
    else:                                       # pragma: no cover (allocator-dependent)
        pytest.skip("the allocator did not reuse the freed parameter's id")
    g.u_low = new
    m(torch.randn(4, 6, dtype=torch.float64)).pow(2).sum().backward()
    assert o.project_unhooked_gradients() == 1  # u_low (replaced); v_low keeps its hook
    uh = f64(g.u_high)
    assert leak(uh, g.u_low.grad, "left") <= leak_tol(torch.float64, *dims(g)) * g.u_low.grad.norm()


def test_hooked_parameters_can_be_swapped():
    """OSFT keeps no weakref to its parameters: module conversion with swap_tensors (the
    __future__ flag, and the path DTensor-like subclasses take) refuses tensors that have one."""
    if not hasattr(torch.__future__, "set_swap_module_params_on_conversion"):
        pytest.skip("torch without swap_tensors module conversion")
    m = nn.Sequential(nn.Linear(6, 6, bias=False)).double()
    o = ot.OSFT(m, targets=["0"], frozen_ratio=0.5)
    prev = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        m.float()
    finally:
        torch.__future__.set_swap_module_params_on_conversion(prev)
    assert all(p.dtype == torch.float32 for p in o.parameters())
    # The swap leaves the autograd hooks behind: the gradients are projected before the step.
    g = next(iter(o.groups.values()))
    opt = ot.OSFTOptimizer(torch.optim.SGD(o.parameters(), lr=0.0), o, project_update=False,
                           retract=False)
    m(torch.randn(4, 6)).pow(2).sum().backward()
    opt.step()
    tol = leak_tol(torch.float32, *dims(g))
    assert leak(g.u_high, g.u_low.grad, "left") <= tol * g.u_low.grad.norm()
    assert leak(g.v_high, g.v_low.grad, "right") <= tol * g.v_low.grad.norm()
