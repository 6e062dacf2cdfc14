"""osft.torch frozen ranks: the PEFT and mini_trainer conventions written out and compared,
targets that freeze everything or nothing, and adaptive ranks from calibration batches against
a float64 importance reference and the seed's rule. Skipped without torch."""

import warnings

import numpy as np
import pytest
from conftest import seed_adaptive
from torch_helpers import Conv1D, Counter, data, dims, f64, leak, leak_tol, max_rel_err, model_tol, tiny

torch = pytest.importorskip("torch")
nn = torch.nn
ot = pytest.importorskip("osft.torch")


def peft_effective_rank(value, min_dim):
    """PEFT OSF (tuners/osf/model.py, _resolve_rank), written out: a float in (0, 1] is a
    fraction of min_dim, int(min_dim * value); the result is clamped to [0, min_dim]."""
    if isinstance(value, float) and 0 < value <= 1:
        r = int(min_dim * value)
    else:
        r = int(value)
    return max(min(min_dim, r), 0)


def mini_trainer_top_k(shape, unfreeze_rank_ratio):
    """mini_trainer, written out: train.py passes rank_ratio = 1.0 - unfreeze_rank_ratio, and
    osft_utils.auto_generate_target_osft_config sets top_k = int(np.floor(min(shape) *
    rank_ratio)), lowered to full_rank - 1 when top_k >= full_rank."""
    rank_ratio = 1.0 - unfreeze_rank_ratio
    top_k = int(np.floor(min(shape) * rank_ratio))
    full_rank = min(shape)
    if top_k >= full_rank:
        top_k = full_rank - 1
    return top_k


def test_rank_conventions():
    assert ot.resolve_rank(0.5, 12) == 6
    assert ot.resolve_rank(0.3, 10) == 3          # 10 * 0.3 = 3.0
    assert ot.resolve_rank(0.99, 10) == 9         # 9.9
    assert ot.resolve_rank(0.29, 100) == 28       # 28.999999999999996, truncated as PEFT
    assert ot.resolve_rank(0.7, 10) == 7          # 7 - 2**-51 exactly, rounded to 7.0
    assert ot.resolve_rank(1, 10) == 1 and ot.resolve_rank(1.0, 10) == 10
    assert ot.resolve_rank(0, 10) == 0
    for bad in (-1, 11, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError):
            ot.resolve_rank(bad, 10)
    with pytest.raises(TypeError):
        ot.resolve_rank(True, 10)
    m = tiny()
    o = ot.OSFT(m, unfreeze_rank_ratio=0.25, rank_pattern={"mlp.down_proj": 3, "q_proj": 0.9})
    for t in o.targets:
        R = t.full_rank
        if "down_proj" in t.name:
            assert o.ranks[t.name] == 3
        elif "q_proj" in t.name:
            assert o.ranks[t.name] == peft_effective_rank(0.9, R)
        else:
            assert o.ranks[t.name] == mini_trainer_top_k(t.matrix_shape, 0.25) == R - 3  # 9 of 12


def test_rank_conventions_match_the_peers():
    from osft.torch.ranks import unfreeze_rank
    # By hand. PEFT: int(100 * 0.57) = int(56.99999999999999) = 56. mini_trainer: floor(10 *
    # (1 - 0.33)) = floor(6.699999999999999) = 6 (R - floor(u R) would be 7); floor(10 * (1 - 0.9))
    # = floor(0.9999999999999998) = 0; u = 0 gives floor(12) = 12, capped at R - 1 = 11; u = 1, 0.
    assert ot.resolve_rank(0.57, 100) == 56
    for u, R, k in [(0.33, 10, 6), (0.9, 10, 0), (0.7, 10, 3), (0.25, 12, 9), (0.0, 12, 11),
                    (1.0, 12, 0), (0.5, 1, 0), (0.0, 1, 0)]:
        assert unfreeze_rank(u, R) == k == mini_trainer_top_k((R, R + 3), u), (u, R)
    # Against the peers' expressions on a grid of ratios and shapes.
    rng = np.random.default_rng(3)
    ratios = [i / 100 for i in range(101)] + list(rng.random(40))
    for shape in [(1, 4), (3, 3), (10, 7), (100, 128), (768, 3072), (4096, 4096)]:
        R = min(shape)
        for f in ratios:
            assert ot.resolve_rank(f, R) == peft_effective_rank(f, R), (f, shape)
            assert unfreeze_rank(f, R) == mini_trainer_top_k(shape, f), (f, shape)
    # Through OSFT: every target of a tiny Llama gets the peer's k.
    for u in (0.1, 0.33, 0.9):
        o = ot.OSFT(tiny(), unfreeze_rank_ratio=u)
        assert all(o.ranks[t.name] == mini_trainer_top_k(t.matrix_shape, u) for t in o.targets)
        o.merge()
    for f in (0.29, 0.57, 0.7):
        o = ot.OSFT(tiny(), frozen_ratio=f)
        assert all(o.ranks[t.name] == peft_effective_rank(f, t.full_rank) for t in o.targets)
        o.merge()


def test_nothing_trainable_is_reported():
    m = tiny()
    # u = 0 is mini_trainer's: one trainable direction per target, said in a warning.
    with pytest.warns(UserWarning, match="unfreeze_rank_ratio=0 follows mini_trainer"):
        o = ot.OSFT(m, unfreeze_rank_ratio=0.0)
    assert all(o.ranks[t.name] == t.full_rank - 1 for t in o.targets)
    assert all(p.numel() > 0 for p in o.parameters())
    o.merge()
    # Some targets at k = R: named.
    with pytest.warns(UserWarning, match=r"4 of 14 targets freeze their full rank .*q_proj"):
        o = ot.OSFT(m, frozen_ratio=0.5, rank_pattern={"q_proj": 1.0, "k_proj": 1.0})
    o.merge()
    with pytest.warns(UserWarning, match="every target freeze"):
        o = ot.OSFT(m, frozen_ratio=1.0)
    o.merge()
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # an ordinary choice warns about nothing
        ot.OSFT(m, frozen_ratio=0.5).merge()


def test_edge_ranks_zero_and_full():
    m = tiny()
    o = ot.OSFT(m, frozen_ratio=0.0)
    assert o.projected_parameters() == []      # nothing frozen: nothing to project
    m(data()).sum().backward()
    o.merge()
    with pytest.warns(UserWarning, match="nothing trainable"):
        o = ot.OSFT(m, frozen_ratio=1.0)
    assert o.parameters() and all(p.numel() == 0 for p in o.parameters())
    x = data()
    y = m(x)
    o.merge()
    # 14 linear layers of at most 20 x 20 rebuilt from their factors, inner lengths at most 20.
    assert max_rel_err(m(x), y) <= model_tol(torch.float64, 14, 20, 20, 20)


# --------------------------------------------------------------------------------------------
# Adaptive ranks from calibration batches.

def _importance_ref(w, x):
    """mean over samples of cos(x[:R], (W x)[:R]), float64."""
    R = min(w.shape)
    y = x @ w.T
    a, b = x[:, :R], y[:, :R]
    return float((np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


def importance_bias(m):
    """Add c I to each target's leading R x R block, c growing along the layers, so that
    cos(x, W x) is positive and differs between layers (a random model's importances average
    about 0, where the seed's normalisation by the mean is degenerate)."""
    with torch.no_grad():
        lins = [mod for name, mod in m.named_modules()
                if isinstance(mod, nn.Linear) and name != "lm_head"]
        for i, mod in enumerate(lins):
            R = min(mod.weight.shape)
            mod.weight[:R, :R] += (0.1 + 0.05 * i) * torch.eye(R, dtype=mod.weight.dtype)
    return m


def test_adaptive_ranks_from_calibration(monkeypatch):
    m = importance_bias(tiny())
    batches = [data(seed=s, n=3) for s in (5, 6)]
    inputs = {}
    hooks = [mod.register_forward_pre_hook(
        lambda mod, a, name=name: inputs.setdefault(name, []).append(a[0].reshape(-1, a[0].shape[-1])))
        for name, mod in m.named_modules() if isinstance(mod, nn.Linear) and name != "lm_head"]
    with torch.no_grad():
        for b in batches:
            m(b)
    for h in hooks:
        h.remove()
    w0 = {n: f64(p).numpy() for n, p in m.named_parameters()}
    c = Counter(monkeypatch, "osft_layer_importance")
    o = ot.OSFT(m, ranks="adaptive", calibration=batches, min_ratio=0.2, target_ratio=0.6,
                max_samples=20)
    assert c.n["osft_layer_importance"] == 3     # one per shape group
    names = [t.name for t in o.targets]
    imp = [_importance_ref(w0[n], torch.cat(inputs[n[:-len(".weight")]])[:20].numpy())
           for n in names]
    want = seed_adaptive(imp, [t.full_rank for t in o.targets], 0.2, 0.6)
    assert [o.ranks[n] for n in names] == want
    assert len(set(o.ranks.values())) > 1       # not all the same: the rule did something


def test_adaptive_seed_defaults_and_non_positive_mean():
    # The seed's defaults (mrr = R/2, trr = R): layers of at least average importance freeze
    # their full rank, and the warning names them.
    m = importance_bias(tiny())
    batches = [data(seed=s, n=3) for s in (5, 6)]
    with pytest.warns(UserWarning, match="freeze their full rank"):
        o = ot.OSFT(m, ranks="adaptive", calibration=batches, max_samples=20)
    assert all(1 <= o.ranks[t.name] <= t.full_rank for t in o.targets)
    assert any(o.ranks[t.name] == t.full_rank for t in o.targets)
    o.merge()
    # W = -I: every input maps to its opposite, importance -1, mean -1: refused, model untouched.
    lin = nn.Linear(6, 6, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(-torch.eye(6, dtype=torch.float64))
    root = nn.Module()
    root.proj = lin
    x = torch.randn(10, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="mean layer importance .* not positive"):
        ot.OSFT(root, targets=["proj"], ranks="adaptive", calibration=[x],
                forward_fn=lambda mod, b: mod.proj(b))
    assert isinstance(root.proj.weight, nn.Parameter)
    assert torch.equal(root.proj.weight, -torch.eye(6, dtype=torch.float64))


def test_conv1d_gpt2_layout():
    torch.manual_seed(3)
    m = nn.Module()
    m.h = nn.Module()
    m.h.attn = nn.Module()
    m.h.attn.c_attn = Conv1D(18, 6)     # weight 6 x 18 (in x out)
    m.h.mlp = nn.Module()
    m.h.mlp.c_fc = Conv1D(10, 6)

    def fwd(x):
        return m.h.attn.c_attn(x).sum(-1) + m.h.mlp.c_fc(x).sum(-1)

    m.double()
    with torch.no_grad():  # positive, different importances (random layers average about 0)
        m.h.attn.c_attn.weight[:, :6] += 0.6 * torch.eye(6, dtype=torch.float64)
        m.h.mlp.c_fc.weight[:, :6] += 0.2 * torch.eye(6, dtype=torch.float64)
    x = torch.randn(30, 6, dtype=torch.float64)
    y0 = fwd(x).detach()
    w = {n: f64(p).numpy() for n, p in m.named_parameters()}
    o = ot.OSFT(m, ranks="adaptive", calibration=[x], forward_fn=lambda mod, b: fwd(b),
                model_type="gpt2", min_ratio=0.0, target_ratio=0.5)
    # Each output sums 18 + 10 entries of two rebuilt layers (6 x 18, 6 x 10; inner length 6).
    scale = max(m.h.attn.c_attn(x).abs().max().item(), m.h.mlp.c_fc(x).abs().max().item())
    assert (fwd(x) - y0).abs().max().item() <= 28 * model_tol(torch.float64, 1, 6, 6, 18) * scale
    # Importance uses the operator W^T (y = x W): compare the ranks with the float64 reference.
    names = [t.name for t in o.targets]
    imp = [_importance_ref(w[n].T, x.numpy()) for n in names]
    assert [o.ranks[n] for n in names] == seed_adaptive(imp, [t.full_rank for t in o.targets],
                                                           0.0, 0.5)
    fwd(x).sum().backward()
    for p, side, g in o.projected_parameters():
        b = g.u_high if side == "left" else g.v_high
        assert leak(b, p.grad, side) <= leak_tol(torch.float64, *dims(g)) * p.grad.norm()
