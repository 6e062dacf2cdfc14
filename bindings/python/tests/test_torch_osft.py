"""The model-level workflow osft.torch (OSFT, OSFTOptimizer, targets, ranks, task sequence),
against float64 references computed here with torch / numpy. Skipped without torch."""

import warnings

import numpy as np
import pytest
from conftest import seed_adaptive

import osft

torch = pytest.importorskip("torch")
nn = torch.nn
ot = pytest.importorskip("osft.torch")
torch.set_num_threads(1)   # tiny matrices: threads only add contention


# --------------------------------------------------------------------------------------------
# Small models with Hugging Face module names.

class Conv1D(nn.Module):
    """GPT-2's Conv1D: weight stored in x out, y = x W + b."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


class Attn(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.o_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        a = torch.softmax(self.q_proj(x) @ self.k_proj(x).transpose(-1, -2) / 4, -1)
        return self.o_proj(a @ self.v_proj(x))


class MLP(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, f), nn.Linear(d, f)
        self.down_proj = nn.Linear(f, d)

    def forward(self, x):
        return self.down_proj(torch.nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.self_attn, self.mlp = Attn(d), MLP(d, f)
        self.input_layernorm = nn.LayerNorm(d)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(x)


class Cfg:
    model_type = "llama"


class TinyLlama(nn.Module):
    def __init__(self, d=12, f=20, layers=2, vocab=7):
        super().__init__()
        self.config = Cfg()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(vocab, d)
        self.model.layers = nn.ModuleList([Layer(d, f) for _ in range(layers)])
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, x):
        for layer in self.model.layers:
            x = layer(x)
        return self.lm_head(x)


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    m = TinyLlama(**kw).double()
    return m


def data(seed=1, n=6, t=5, d=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, t, d, generator=g, dtype=torch.float64)


LLAMA_TARGETS = [f"model.layers.{i}.{s}.weight" for i in range(2) for s in
                 ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]]


def f64(t):
    return t.detach().double()


# --------------------------------------------------------------------------------------------
# Target selection.

def build(names, cls=lambda: nn.Linear(4, 3)):
    root = nn.Module()
    for name in names:
        mod = root
        parts = name.split(".")
        for p in parts[:-1]:
            if not hasattr(mod, p):
                mod.add_module(p, nn.Module())
            mod = getattr(mod, p)
        mod.add_module(parts[-1], cls())
    return root


@pytest.mark.parametrize("model_type,names,want", [
    ("llama", ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.gate_proj",
               "model.layers.0.mlp.down_proj", "lm_head", "model.layers.0.input_layernorm"],
     ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.gate_proj",
      "model.layers.0.mlp.down_proj"]),
    ("qwen2", ["model.layers.3.self_attn.v_proj", "lm_head"], ["model.layers.3.self_attn.v_proj"]),
    ("phi3", ["model.layers.0.self_attn.qkv_proj", "model.layers.0.mlp.gate_up_proj",
              "model.layers.0.mlp.down_proj", "lm_head"],
     ["model.layers.0.self_attn.qkv_proj", "model.layers.0.mlp.gate_up_proj",
      "model.layers.0.mlp.down_proj"]),
    ("opt", ["model.decoder.layers.0.self_attn.out_proj", "model.decoder.layers.0.fc1",
             "model.decoder.layers.0.fc2", "lm_head"],
     ["model.decoder.layers.0.self_attn.out_proj", "model.decoder.layers.0.fc1",
      "model.decoder.layers.0.fc2"]),
    ("gptj", ["transformer.h.0.attn.q_proj", "transformer.h.0.attn.out_proj",
              "transformer.h.0.mlp.fc_in", "transformer.h.0.mlp.fc_out", "lm_head"],
     ["transformer.h.0.attn.q_proj", "transformer.h.0.attn.out_proj",
      "transformer.h.0.mlp.fc_in", "transformer.h.0.mlp.fc_out"]),
    ("t5", ["encoder.block.0.layer.0.SelfAttention.q", "encoder.block.0.layer.1.DenseReluDense.wi",
            "decoder.block.0.layer.1.EncDecAttention.o", "decoder.block.0.layer.2.DenseReluDense.wi_1",
            "lm_head", "shared"],
     ["encoder.block.0.layer.0.SelfAttention.q", "encoder.block.0.layer.1.DenseReluDense.wi",
      "decoder.block.0.layer.1.EncDecAttention.o", "decoder.block.0.layer.2.DenseReluDense.wi_1"]),
])
def test_default_targets(model_type, names, want):
    m = build(names)
    got = [t.module_name for t in ot.find_targets(m, model_type=model_type)]
    assert got == want


def test_unknown_model_type_warns_with_what_it_matched():
    m = build(["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "lm_head"])
    with pytest.warns(UserWarning, match=r"model_type 'brandnew' has no default targets.*2 "
                                         r"parameters \(q_proj, up_proj"):
        got = [t.module_name for t in ot.find_targets(m, model_type="brandnew")]
    assert got == ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj"]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # explicit targets or a plain module: no warning
        ot.find_targets(m, targets=["q_proj"], model_type="brandnew")
        ot.find_targets(m)


def test_gpt2_conv1d_targets_and_kind():
    names = ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
             "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj", "lm_head"]
    m = build(names, cls=lambda: Conv1D(6, 4))
    ts = ot.find_targets(m, model_type="gpt2")
    assert [t.module_name for t in ts] == names[:4]
    assert {t.kind for t in ts} == {"conv1d"} and ts[0].shape == (4, 6)


def test_user_patterns_regex_glob_and_exclusions():
    m = tiny()
    ts = ot.find_targets(m, targets=["mlp.*_proj"], exclude=["re:layers\\.1\\."])
    assert [t.name for t in ts] == [f"model.layers.0.mlp.{s}.weight"
                                    for s in ("gate_proj", "up_proj", "down_proj")]
    ts = ot.find_targets(m, targets=["re:q_proj$"])
    assert [t.name for t in ts] == ["model.layers.0.self_attn.q_proj.weight",
                                    "model.layers.1.self_attn.q_proj.weight"]
    # The model's config picks the defaults; unknown types use the union.
    assert [t.name for t in ot.find_targets(m)] == LLAMA_TARGETS
    assert "attn.c_attn" in ot.default_patterns("no-such-model")
    # Broad globs skip 1-D weights (layer norms) rather than failing.
    ts = ot.find_targets(m, targets=["model.layers.0.*"])
    assert all(t.kind == "linear" for t in ts) and len(ts) == 7


def test_target_errors():
    m = tiny()
    with pytest.raises(ValueError, match="no OSFT target matched"):
        ot.find_targets(m, targets=["self_attn.q_prj"])
    with pytest.raises(ValueError, match="only 2-D or 3-D"):
        ot.find_targets(m, targets=["input_layernorm.weight"])
    with pytest.raises(ValueError, match="bad regular expression"):
        ot.find_targets(m, targets=["re:("])
    with pytest.raises(TypeError):
        ot.find_targets(m, targets=[3])
    m.lm_head.weight = m.model.layers[0].mlp.gate_proj.weight  # tie a target (shapes differ; fine)
    with pytest.raises(ValueError, match="tied"):
        ot.find_targets(m, targets=["gate_proj", "lm_head"])


# --------------------------------------------------------------------------------------------
# Ranks.

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


# --------------------------------------------------------------------------------------------
# Decomposition: batched per shape group, reconstruction, factors.

class Counter:
    def __init__(self, monkeypatch, *names):
        self.n = {k: 0 for k in names}
        for name in names:
            fn = getattr(osft._lib.lib, name)

            def wrapped(*a, _fn=fn, _name=name):
                self.n[_name] += 1
                return _fn(*a)

            monkeypatch.setattr(osft._lib.lib, name, wrapped)


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
    np.testing.assert_allclose(m(x).detach().numpy(), y0.numpy(), atol=1e-10)
    for t in o.targets:
        w = f64(getattr(t.module, t.attr))
        np.testing.assert_allclose(w.numpy(), w0[t.name].numpy(), atol=1e-11)
    for g in o.groups.values():
        for name, off, _cnt in g.members:
            s_ref = np.linalg.svd(w0[name].numpy(), compute_uv=False)
            s = torch.cat([g.s_high[off], g.s_low[off]]).detach().numpy()
            np.testing.assert_allclose(s, s_ref, rtol=1e-10, atol=1e-12)
            u = torch.cat([g.u_high[off], g.u_low[off]], 1).detach()
            np.testing.assert_allclose((u.T @ u).numpy(), np.eye(g.r), atol=1e-10)
    dense = o.dense_weights()
    assert c.n["osft_reconstruct"] == 3
    for name, w in dense.items():
        np.testing.assert_allclose(w.numpy(), w0[name].numpy(), atol=1e-11)
    o.merge()
    assert [n for n, _ in m.named_parameters()] == list(w0)
    assert type(m.model.layers[0].mlp.up_proj) is nn.Linear
    np.testing.assert_allclose(m(x).detach().numpy(), y0.numpy(), atol=1e-10)


def test_float32_and_bfloat16_models():
    for dt, tol in ((torch.float32, 1e-5), (torch.bfloat16, 3e-2)):
        torch.manual_seed(0)
        m = TinyLlama().to(dt)
        w0 = {n: f64(p) for n, p in m.named_parameters()}
        o = ot.OSFT(m, frozen_ratio=0.5)
        assert all(g.u_high.dtype == dt for g in o.groups.values())
        for name, w in o.dense_weights().items():
            err = (f64(w) - w0[name]).norm() / w0[name].norm()
            assert err < tol, (dt, name, err)
        m(data().to(dt)).float().pow(2).mean().backward()
        for p, _side, _g in o.projected_parameters():
            assert p.grad is not None and p.grad.dtype == dt


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
        np.testing.assert_allclose(f64(p.grad).numpy(), want.numpy(), atol=1e-12)
        if side == "left":
            assert (uh.transpose(1, 2) @ f64(p.grad)).abs().max() < 1e-12
        else:
            assert (f64(p.grad) @ vh.transpose(1, 2)).abs().max() < 1e-12
    # S_low's gradient is not projected, and matches the raw one.
    for g, gr in zip(o.groups.values(), o_ref.groups.values()):
        np.testing.assert_allclose(g.s_low.grad.numpy(), gr.s_low.grad.numpy(), atol=1e-12)
    # The explicit form: 6 calls, same result.
    c.n["osft_project"] = 0
    assert o_ref.project_gradients() == 6 and c.n["osft_project"] == 6
    for (p, _, _), (pr, _, _) in zip(o.projected_parameters(), o_ref.projected_parameters()):
        np.testing.assert_allclose(pr.grad.numpy(), p.grad.numpy(), atol=1e-12)


def test_dense_mode_projects_both_sides(monkeypatch):
    x = data()
    m = tiny()
    w0 = {n: f64(p) for n, p in m.named_parameters()}
    c = Counter(monkeypatch, "osft_project")
    o = ot.OSFT(m, frozen_ratio=0.5, mode="dense")
    m(x).pow(2).mean().backward()
    assert c.n["osft_project"] == 3
    for g in o.groups.values():
        uh, vh, G = f64(g.u_high), f64(g.v_high), f64(g.weight.grad)
        assert (uh.transpose(1, 2) @ G).abs().max() < 1e-12
        assert (G @ vh.transpose(1, 2)).abs().max() < 1e-12
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
        assert (uh.T @ d).norm() / d.norm() < 1e-12 and (d @ vh.T).norm() / d.norm() < 1e-12


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
    assert leak < 1e-12
    assert max(o.leakage().values()) < 1e-12      # osft.leakage agrees
    control, oc = _train_adam(wrap=False)
    assert control > 1e-3, control                # gradient projection alone leaks under Adam
    assert max(oc.leakage().values()) == pytest.approx(control, rel=1e-6)


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
    np.testing.assert_allclose(m(x).detach().numpy(), y_before.numpy(), atol=1e-10)
    for n, w in o.dense_weights().items():
        np.testing.assert_allclose(w.numpy(), w_before[n].numpy(), atol=1e-11)
    # The new U_high is the top singular subspace of the merged weight.
    for g in o.groups.values():
        name, off, _ = g.members[0]
        u, s, vt = np.linalg.svd(w_before[name].numpy())
        np.testing.assert_allclose(g.s_high[off].detach().numpy(), s[:g.k], rtol=1e-10)
        p_ref = u[:, :g.k] @ u[:, :g.k].T
        uh = g.u_high[off].detach().numpy()
        np.testing.assert_allclose(uh @ uh.T, p_ref, atol=1e-8)
    # Where fewer than k1 - k0 trained singular values exceed the smallest frozen one, the new
    # frozen subspace contains the previous one (the documented condition).
    below = {n: int((low_s[n] > s_min[n]).sum()) <= k1[n] - k0[n] for n in k0}
    assert sum(below.values()) >= 4, below
    for g in o.groups.values():
        for name, off, _ in g.members:
            uh, uo = f64(g.u_high[off]), old_uh[name]
            if below[name]:
                assert (uo - uh @ (uh.T @ uo)).norm() / uo.norm() < 1e-8, name
    # grow_only: a smaller ratio keeps the previous ranks.
    k2 = o.next_task(frozen_ratio=0.1)
    assert k2 == k1 and o.task == 2
    k3 = o.next_task(frozen_ratio=0.1, grow_only=False)
    assert all(k3[n] < k1[n] for n in k1)
    o.merge()


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
    np.testing.assert_allclose(fwd(x).detach().numpy(), y0.numpy(), atol=1e-10)
    # Importance uses the operator W^T (y = x W): compare the ranks with the float64 reference.
    names = [t.name for t in o.targets]
    imp = [_importance_ref(w[n].T, x.numpy()) for n in names]
    assert [o.ranks[n] for n in names] == seed_adaptive(imp, [t.full_rank for t in o.targets],
                                                           0.0, 0.5)
    fwd(x).sum().backward()
    for p, side, g in o.projected_parameters():
        b = f64(g.u_high if side == "left" else g.v_high)
        gr = f64(p.grad)
        leak = b.transpose(1, 2) @ gr if side == "left" else gr @ b.transpose(1, 2)
        assert leak.abs().max() < 1e-12


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
    assert fwd().item() == pytest.approx(y0, rel=1e-12)
    fwd().backward()
    assert c.n["osft_project"] == 2
    uh, gu = f64(g.u_high), f64(g.u_low.grad)
    assert (uh.transpose(1, 2) @ gu).abs().max() < 1e-12 and gu[:3].norm() > 0
    o.merge()
    np.testing.assert_allclose(root.mlp.experts.down_proj.detach().numpy(),
                               w0["mlp.experts.down_proj"].numpy(), atol=1e-12)
    assert isinstance(root.mlp.experts.down_proj, nn.Parameter)


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
    np.testing.assert_allclose(m(x).detach().numpy(), y.detach().numpy(), atol=1e-10)


# --------------------------------------------------------------------------------------------
# DeepSpeed: the engine hook, against a duck-typed engine (deepspeed is not installed).

class FakeEngine:
    def __init__(self, module, optimizer, stage=0):
        self.module, self.optimizer, self.stage, self.steps = module, optimizer, stage, 0

    def zero_optimization_stage(self):
        return self.stage

    def backward(self, loss):
        loss.backward()

    def step(self):
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.steps += 1


def test_attach_deepspeed_stage0_retracts():
    m = tiny()
    o = ot.OSFT(m)
    eng = FakeEngine(m, torch.optim.Adam(o.parameters(), lr=2e-2))
    detach = ot.attach_deepspeed(eng, o)
    x = data()
    for _ in range(60):
        eng.backward((m(x) - 1).pow(2).mean())
        eng.step()
    assert eng.steps == 60
    assert max(o.leakage().values()) < 1e-12
    detach()
    assert eng.step.__func__ is FakeEngine.step


def test_attach_deepspeed_checks():
    m = tiny()
    o = ot.OSFT(m, project_in_backward=False)
    with pytest.raises(TypeError):
        ot.attach_deepspeed(object(), o)
    with pytest.raises(ValueError, match="not inside"):
        ot.attach_deepspeed(FakeEngine(tiny(), None), o)
    with pytest.raises(ValueError, match="backward hooks"):
        ot.attach_deepspeed(FakeEngine(m, None, stage=2), o)
    with pytest.raises(ValueError, match="unknown ZeRO stage 4"):
        ot.attach_deepspeed(FakeEngine(m, None, stage=4), o)
    o.merge()
    o = ot.OSFT(m)
    # An OSFTOptimizer given to DeepSpeed as its client optimizer is refused where DeepSpeed
    # steps flat fp32 partitions instead of OSFT's parameters.
    client = ot.OSFTOptimizer(torch.optim.SGD(o.parameters(), lr=0.1), o)
    with pytest.raises(ValueError, match="client optimizer does not work at ZeRO stage 2"):
        ot.attach_deepspeed(FakeEngine(m, client, stage=2), o)
    # project_in_backward=False at stage 0: the hook projects .grad before the step.
    o.merge()
    o = ot.OSFT(m, project_in_backward=False)
    eng = FakeEngine(m, torch.optim.SGD(o.parameters(), lr=0.5))
    ot.attach_deepspeed(eng, o, retract=False)
    eng.backward(m(data()).pow(2).mean())
    eng.step()
    assert max(o.leakage().values()) < 1e-12


def test_attach_deepspeed_checkpoints_carry_the_raw_factors():
    # engine.save_checkpoint / load_checkpoint use module.state_dict() / load_state_dict():
    # after attach_deepspeed they must hold the factors DeepSpeed's masters belong to, not
    # plain dense weights that loading would decompose again.
    m = tiny()
    o = ot.OSFT(m)
    assert not any(".osft_" in k for k in m.state_dict())          # plain by default
    eng = FakeEngine(m, torch.optim.Adam(o.parameters(), lr=2e-2))
    detach = ot.attach_deepspeed(eng, o)
    x = data()
    for _ in range(3):
        eng.backward((m(x) - 1).pow(2).mean())
        eng.step()
    from osft.torch.checkpoint import group_prefixes

    sd = {k: v.clone() for k, v in m.state_dict().items()}
    prefixes = group_prefixes(o).values()
    assert prefixes and all(f"{p}.{f}" in sd for p in prefixes
                            for f in ("u_high", "s_high", "v_high", "u_low", "s_low", "v_low"))
    assert not any(k in sd for k in LLAMA_TARGETS)
    # Loading it back restores the trained factors bit for bit (no re-decomposition).
    before = [p.detach().clone() for p in o.parameters()]
    with torch.no_grad():
        for p in o.parameters():
            p.add_(1.0)
    m.load_state_dict(sd)
    for p, b in zip(o.parameters(), before):
        assert torch.equal(p, b)
    detach()
    assert not any(".osft_" in k for k in m.state_dict())          # the user's setting again


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
        np.testing.assert_allclose(sd[k].numpy(), v.numpy(), atol=1e-11)
    # Loads into a fresh plain model.
    fresh = tiny(seed=5)
    fresh.load_state_dict(sd)
    x = data()
    np.testing.assert_allclose(fresh(x).detach().numpy(), m(x).detach().numpy(), atol=1e-10)


def test_cuda_model_workflow():
    if not torch.cuda.is_available():
        pytest.skip("not run: no GPU (no CUDA device visible to torch)")
    try:
        osft.Context("cuda").close()
    except osft.BackendUnavailableError as e:
        pytest.skip(f"osft CUDA backend unavailable although torch sees a GPU: {e.message}")
    torch.manual_seed(0)
    m = TinyLlama().cuda()
    x = data().float().cuda()
    y0 = m(x).detach()
    w0 = {n: f64(p).cpu() for n, p in m.named_parameters()}
    o = ot.OSFT(m, frozen_ratio=0.5)
    assert all(g.u_high.is_cuda for g in o.groups.values())
    torch.testing.assert_close(m(x).detach(), y0, atol=1e-4, rtol=1e-4)
    for name, w in o.dense_weights().items():
        assert (f64(w).cpu() - w0[name]).norm() / w0[name].norm() < 1e-5
    opt = ot.OSFTOptimizer(torch.optim.Adam(o.parameters(), lr=1e-2), o)
    for _ in range(20):
        opt.zero_grad()
        (m(x) - 1).pow(2).mean().backward()
        opt.step()
    torch.cuda.synchronize()
    assert max(o.leakage().values()) < 1e-5
    for p, side, g in o.projected_parameters():
        b, gr = f64(g.u_high if side == "left" else g.v_high), f64(p.grad)
        leak = b.transpose(1, 2) @ gr if side == "left" else gr @ b.transpose(1, 2)
        assert leak.abs().max() < 1e-5 * max(1.0, gr.abs().max().item())


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
            seen.append(float(leak.abs().max()))
        return out

    inner.step = spy

    def closure():
        opt.zero_grad()
        loss = m(x).pow(2).mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_tensor(loss) and seen and max(seen) < 1e-12
    # SGD on projected gradients never leaves the subspace, even without update projection.
    assert max(o.leakage().values()) < 1e-12


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
    np.testing.assert_allclose(root.experts(x).detach().numpy(), y0.numpy(), atol=1e-12)
    for n in ("gate_up_proj", "down_proj"):
        np.testing.assert_allclose(f64(getattr(root.experts, n)).numpy(),
                                   w0[f"experts.{n}"].numpy(), atol=1e-12)
    root.experts(x).sum().backward()
    assert all(p.grad is not None for p in o.parameters())
    o.merge()
    assert [n for n, _ in root.named_parameters()] == list(w0)
    assert type(root.experts) is TwoExperts


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


def test_attach_deepspeed_mixed_precision_refusals():
    m = tiny()
    o = ot.OSFT(m, mode="dense")
    eng = FakeEngine(m, torch.optim.SGD(o.parameters(), lr=0.1))
    eng.bfloat16_enabled = lambda: True
    eng.fp16_enabled = lambda: False
    with pytest.raises(ValueError, match="mode='dense' is supported at ZeRO stage 0 in fp32 only"):
        ot.attach_deepspeed(eng, o)


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
    assert (uh.transpose(1, 2) @ f64(g.u_low.grad)).abs().max() < 1e-12


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
    uh, vh = f64(g.u_high), f64(g.v_high)
    assert (uh.transpose(1, 2) @ f64(g.u_low.grad)).abs().max() < 1e-5
    assert (f64(g.v_low.grad) @ vh.transpose(1, 2)).abs().max() < 1e-5


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
    np.testing.assert_allclose(w.numpy(), want.numpy(), atol=1e-12)
