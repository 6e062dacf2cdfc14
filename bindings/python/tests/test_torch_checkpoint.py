"""Checkpoints of a model under osft.torch (tiny transformers Llama built from a config, nothing
downloaded): the plain ``state_dict()`` / ``save_pretrained()`` that loads into a fresh plain
model, plain weights loaded back under OSFT, the OSFT-only ``save_pretrained`` /
``from_pretrained`` that restores training exactly (in a fresh process too, with persistent
buffers such as BatchNorm statistics, and from fake ZeRO-3-partitioned parameters), a DeepSpeed
engine checkpoint resumed exactly (when deepspeed is installed), and ``disable_adapter()``.
Skipped without torch and transformers."""

import json
import runpy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import svd_tol, unit_roundoff

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")
ot = pytest.importorskip("osft.torch")
torch.set_num_threads(1)

V = 40
CFG = dict(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)


def llama(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return T.LlamaForCausalLM(T.LlamaConfig(**CFG)).to(dtype)


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (2, 7), generator=g)
    return dict(input_ids=ids, labels=ids)


def run(model, opt, steps, seed=3):
    losses = []
    for i in range(steps):
        opt.zero_grad()
        loss = model(**batch(seed + i)).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def train(model, o, steps, seed=3):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = ot.OSFTOptimizer(torch.optim.AdamW(params, lr=1e-2), o)
    return opt, run(model, opt, steps, seed)


def logits(model, seed=9):
    with torch.no_grad():
        return model(input_ids=batch(seed)["input_ids"]).logits


# Float64 forwards of this model that differ only in rounding (a weight rebuilt from its factors
# against the factorised forward): the GEMMs along a path (per layer q/k/v 16, scores 8,
# attention 7, o 16, gate/up 16, down 24; lm_head 16) sum 190 products, 4 * 190 u of the
# logits' size. A re-decomposition adds the SVD bound of each of the 14 layer weights (the
# logits move by about 0.7 of a relative change of all of them, measured).
U64 = unit_roundoff(np.float64)
ROUNDING_TOL = 4 * 190 * U64
RESVD_TOL = ROUNDING_TOL + 14 * svd_tol(24, 16, np.float64, np.float64)


@pytest.fixture
def float64_rms_norm(monkeypatch):
    """Llama's RMSNorm computes in float32 whatever the model's dtype: it would round these float64
    models' hidden states to float32 at every norm, so that a float64 rounding difference upstream
    could flip a float32 rounding (2^-24 relative) and the bounds above would not hold. The norm
    keeps the input's dtype here (the same operations otherwise)."""
    def forward(self, h):
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h
    monkeypatch.setattr(T.models.llama.modeling_llama.LlamaRMSNorm, "forward", forward)


def assert_logits_close(got, want, tol):
    err = float((got - want).abs().max() / want.abs().max())
    assert err <= tol, (err, tol)


@pytest.mark.usefixtures("float64_rms_norm")
def test_plain_state_dict_and_save_pretrained_load_into_a_fresh_model(tmp_path):
    m = llama()
    plain_keys = list(m.state_dict())
    o = ot.OSFT(m, frozen_ratio=0.5)
    train(m, o, 3)
    sd = m.state_dict()
    assert list(sd) == plain_keys                   # plain names, plain order
    assert not any("osft_" in k for k in sd)
    want = logits(m)
    fresh = llama(seed=5)
    fresh.load_state_dict(sd)                       # strict: every key, nothing extra
    assert_logits_close(logits(fresh), want, ROUNDING_TOL)
    # transformers' save_pretrained / from_pretrained (safetensors) of the model under OSFT.
    m.save_pretrained(tmp_path / "hf")
    with open(tmp_path / "hf" / "model.safetensors", "rb") as f:
        header = f.read(8 + int.from_bytes(f.read(8), "little"))
    assert b"osft_" not in header and b"q_proj.weight" in header
    loaded = T.LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float64)
    assert torch.equal(logits(loaded), logits(fresh))    # the same float64 values, stored exactly
    # The raw entries on request (e.g. for frameworks that resume from model.state_dict()).
    o.plain_state_dict = False
    assert any(".osft_g" in k for k in m.state_dict())


@pytest.mark.usefixtures("float64_rms_norm")
def test_plain_weights_load_back_under_osft():
    m = llama()
    o = ot.OSFT(m, frozen_ratio=0.5)
    trained = llama(seed=4)                         # other weights, same architecture
    m.load_state_dict(trained.state_dict())         # re-decomposed at the same ranks
    assert_logits_close(logits(m), logits(trained), RESVD_TOL)
    # A fresh split: orthogonal again. ||U_h^T U_l|| / ||U_l|| over k = 8 frozen columns is at
    # most sqrt(k) times the SVD's entry bound (largest weight 24 x 16), plus its accumulation.
    assert max(o.leakage().values()) < 8 ** 0.5 * svd_tol(24, 16, np.float64, np.float64) + 4 * (24 + 8) * U64
    with pytest.raises(RuntimeError, match="Missing key"):
        sd = trained.state_dict()
        del sd["model.layers.0.self_attn.q_proj.weight"]
        m.load_state_dict(sd)


def test_osft_only_save_restores_training_exactly(tmp_path):
    m = llama()
    o = ot.OSFT(m, frozen_ratio=0.5, rank_pattern={"mlp.down_proj": 3}, keep_base=True)
    opt, _ = train(m, o, 3)
    o.save_pretrained(tmp_path / "osft")
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    cfg = json.loads((tmp_path / "osft" / "osft_config.json").read_text())
    assert cfg["settings"]["upcast_dtype"] == "torch.float64"
    assert {t["name"]: t["k"] for t in cfg["targets"]} == o.ranks
    assert cfg["frozen_included"] is False
    saved = torch.load(tmp_path / "osft" / "osft_model.pt", weights_only=True)
    assert {k.split(".")[0] for k in saved} == {"groups", "base", "others"}   # no frozen.*
    assert sorted(k[len("others."):] for k in saved if k.startswith("others.")) == sorted(
        n for n, p in m.named_parameters() if p.requires_grad and ".osft_" not in n)

    m2 = llama()                                    # the same base, freshly built
    o2 = ot.OSFT.from_pretrained(m2, tmp_path / "osft")
    assert o2.ranks == o.ranks and list(o2.groups) == list(o.groups)
    for name, g in o.groups.items():
        g2 = o2.groups[name]
        for t in ("u_high", "s_high", "v_high", "u_low", "s_low", "v_low", "u_low_base"):
            assert torch.equal(getattr(g, t), getattr(g2, t)), (name, t)
    for (n1, p1), (n2, p2) in zip(m.named_parameters(), m2.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2) and p1.requires_grad == p2.requires_grad
    opt2, _ = train(m2, o2, 0)
    opt2.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    # Same process, same bits in: the continued runs must agree exactly.
    assert run(m2, opt2, 2, seed=10) == run(m, opt, 2, seed=10)
    for p1, p2 in zip(m.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


def bn_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.BatchNorm1d(12),
                               torch.nn.Linear(12, 6)).double()


def test_osft_only_save_restores_persistent_buffers(tmp_path):
    """BatchNorm's running statistics (persistent buffers outside OSFT) are part of the resumed
    state: after from_pretrained the eval-mode outputs and the continued training agree."""
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(16, 8, generator=g, dtype=torch.float64) for _ in range(6)]

    def steps(model, opt, batches):
        model.train()
        for x in batches:
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()

    m = bn_model()
    o = ot.OSFT(m, targets=["0.weight", "2.weight"], frozen_ratio=0.5)
    opt = ot.OSFTOptimizer(torch.optim.AdamW(m.parameters(), lr=1e-2), o)
    steps(m, opt, xs[:3])
    assert int(m[1].num_batches_tracked) == 3
    o.save_pretrained(tmp_path / "osft")
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    cfg = json.loads((tmp_path / "osft" / "osft_config.json").read_text())
    assert cfg["persistent_buffers"] == ["1.num_batches_tracked", "1.running_mean",
                                         "1.running_var"]

    m2 = bn_model()
    o2 = ot.OSFT.from_pretrained(m2, tmp_path / "osft")
    for n in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(m[1], n), getattr(m2[1], n)), n
    m.eval(), m2.eval()
    assert torch.equal(m(xs[5]), m2(xs[5]))
    opt2 = ot.OSFTOptimizer(torch.optim.AdamW(m2.parameters(), lr=1e-2), o2)
    opt2.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    steps(m, opt, xs[3:5]), steps(m2, opt2, xs[3:5])
    for (n1, t1), (n2, t2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2), n1


class _Status:
    def __init__(self, name):
        self.name = name


class _FakeGatheredParameters:
    """deepspeed.zero.GatheredParameters over fake partitioned parameters: the full values are
    in place inside the block, a (0,) tensor outside (as DeepSpeed's ZeRO-3 leaves them)."""

    def __init__(self, params, modifier_rank=None):
        self.params = params

    def __enter__(self):
        for p in self.params:
            p.data, p.ds_status = p.ds_full, _Status("AVAILABLE")

    def __exit__(self, *exc):
        for p in self.params:
            p.data, p.ds_status = torch.empty(0, dtype=p.dtype), _Status("NOT_AVAILABLE")


def _partition(params):
    for i, p in enumerate(params):
        p.ds_id, p.ds_tensor, p.ds_shape = i, torch.empty(0, dtype=p.dtype), p.shape
        p.ds_full = p.data
        p.data, p.ds_status = torch.empty(0, dtype=p.dtype), _Status("NOT_AVAILABLE")


def test_save_pretrained_gathers_zero3_partitioned_parameters(tmp_path, monkeypatch):
    """Under ZeRO-3 a parameter holds a (0,) tensor outside GatheredParameters: the save must
    hold the full values (gathered), not empty tensors; an ungathered one is refused."""
    import types

    m = llama()
    o = ot.OSFT(m, frozen_ratio=0.5)
    train(m, o, 2)
    want = o.osft_state_dict()
    _partition([p for p in m.parameters()])
    fake = types.ModuleType("deepspeed")
    fake.zero = types.SimpleNamespace(GatheredParameters=_FakeGatheredParameters)
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    o.save_pretrained(tmp_path / "osft")
    saved = torch.load(tmp_path / "osft" / "osft_model.pt", weights_only=True)
    assert saved.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(saved[k], v), k
    assert all(p.numel() == 0 for p in m.parameters())       # released again afterwards
    # A partitioned parameter that gathering does not fill is refused, not saved empty.
    for p in m.parameters():
        p.ds_status = _Status("AVAILABLE")
    with pytest.raises(ValueError, match="not gathered"):
        o.save_pretrained(tmp_path / "osft2")


def test_after_next_task_state_dict_is_plain_and_the_save_holds_the_frozen_factors(tmp_path):
    """After next_task the frozen subspace comes from trained weights the base model does not
    hold: save_pretrained then includes the frozen factors by default, and from_pretrained onto
    the base restores the task exactly."""
    m = llama()
    plain_keys = list(m.state_dict())
    o = ot.OSFT(m, frozen_ratio=0.5)
    train(m, o, 2)
    o.next_task(frozen_ratio=0.75)
    opt, _ = train(m, o, 2)
    assert list(m.state_dict()) == plain_keys
    o.save_pretrained(tmp_path / "t1")
    cfg = json.loads((tmp_path / "t1" / "osft_config.json").read_text())
    assert cfg["task"] == 1 and cfg["frozen_included"] is True
    m2 = llama()
    o2 = ot.OSFT.from_pretrained(m2, tmp_path / "t1")
    assert o2.task == 1 and o2.ranks == o.ranks
    assert torch.equal(logits(m2), logits(m))
    for (n1, p1), (n2, p2) in zip(m.named_parameters(), m2.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_from_pretrained_checks_the_frozen_factors(tmp_path):
    m = llama()
    o = ot.OSFT(m, frozen_ratio=0.5)
    train(m, o, 2)
    o.save_pretrained(tmp_path / "a")
    with pytest.raises(ValueError, match="differ from the saved ones"):
        ot.OSFT.from_pretrained(llama(seed=6), tmp_path / "a")   # another base model
    o.save_pretrained(tmp_path / "b", include_frozen=True)
    o3 = ot.OSFT.from_pretrained(llama(seed=6), tmp_path / "b")   # frozen factors from the file
    for name, g in o.groups.items():
        g3 = o3.groups[name]
        for t in ("u_high", "s_high", "v_high", "u_low", "s_low", "v_low"):
            assert torch.equal(getattr(g, t), getattr(g3, t)), (name, t)
    with pytest.raises(ValueError, match="cannot override"):
        ot.OSFT.from_pretrained(llama(), tmp_path / "b", mode="dense")
    with pytest.raises(FileNotFoundError):
        ot.OSFT.from_pretrained(llama(), tmp_path / "nothing")


@pytest.mark.usefixtures("float64_rms_norm")
def test_disable_adapter_gives_the_base_model():
    base = llama()
    m = llama()
    o = ot.OSFT(m, frozen_ratio=0.5, keep_base=True, freeze_others=True)
    train(m, o, 3)
    trained = logits(m)
    assert (trained - logits(base)).abs().max() > 1e-3          # it trained
    with o.disable_adapter():                                   # the base, as decomposed
        assert_logits_close(logits(m), logits(base), RESVD_TOL)
    assert torch.equal(logits(m), trained)
    for forward in ("dense", "factorised"):                       # both forwards honour it
        m2 = llama()
        o2 = ot.OSFT(m2, frozen_ratio=0.5, keep_base=True, freeze_others=True, forward=forward)
        train(m2, o2, 2)
        with o2.disable_adapter():
            assert_logits_close(logits(m2), logits(base), RESVD_TOL)
    with pytest.raises(RuntimeError, match="keep_base=True"):
        with ot.OSFT(llama(), frozen_ratio=0.5).disable_adapter():
            pass


_RUN = textwrap.dedent("""
    import json, sys
    import torch, transformers as T
    import osft.torch as ot
    torch.set_num_threads(1)
    mode, out = sys.argv[1], sys.argv[2]
    V = 40
    def llama():
        torch.manual_seed(0)
        return T.LlamaForCausalLM(T.LlamaConfig(vocab_size=V, hidden_size=16,
            intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=32)).float()
    def batch(i):
        ids = torch.randint(0, V, (2, 7), generator=torch.Generator().manual_seed(100 + i))
        return dict(input_ids=ids, labels=ids)
    def steps(m, opt, first, n):
        losses = []
        for i in range(first, first + n):
            opt.zero_grad()
            loss = m(**batch(i)).loss
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses
    m = llama()
    if mode == "first":
        o = ot.OSFT(m, frozen_ratio=0.5)
    else:
        o = ot.OSFT.from_pretrained(m, out + "/ckpt")
    params = [p for p in m.parameters() if p.requires_grad]
    opt = ot.OSFTOptimizer(torch.optim.AdamW(params, lr=1e-2), o)
    if mode == "first":
        steps(m, opt, 0, 3)
        o.save_pretrained(out + "/ckpt")
        torch.save(opt.state_dict(), out + "/ckpt/optimizer.pt")
    else:
        opt.load_state_dict(torch.load(out + "/ckpt/optimizer.pt", weights_only=True))
    losses = steps(m, opt, 3, 4)
    torch.save({n: p.detach() for n, p in m.named_parameters()}, out + f"/{mode}.pt")
    json.dump(losses, open(out + f"/{mode}.json", "w"))
""")


def test_save_fresh_process_load_continue_equals_the_uninterrupted_run(tmp_path):
    """This process trains 3 steps, saves (OSFT state + optimizer), and continues 4 steps (the
    uninterrupted run); a fresh process builds the base model afresh, loads, and runs the same
    4 steps. Both are float32 on one thread: the same operations on the same bits give the same
    bits, so the trajectories must be *equal* (losses and every final parameter), not close."""
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    argv = sys.argv
    sys.argv = [str(script), "first", str(tmp_path)]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    r = subprocess.run([sys.executable, str(script), "resumed", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    first = json.loads((tmp_path / "first.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert len(first) == 4 and resumed == first
    a = torch.load(tmp_path / "first.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


# A DeepSpeed engine checkpoint (engine.save_checkpoint / load_checkpoint, which go through
# model.state_dict() / load_state_dict()), 1 gloo process on DeepSpeed's CPU accelerator: run A
# trains 3 steps, saves, trains 3 more; run B builds the same model afresh, loads, trains the
# same 3. "raw" is attach_deepspeed's setting (factor entries); "plain" puts back plain dense
# weights, the control: loading them decomposes the trained weights again while DeepSpeed
# restores the fp32 masters of the old factors, so B must leave A's trajectory.
_DS_RUN = textwrap.dedent("""
    import json, logging, os, sys
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                      DS_ACCELERATOR="cpu")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    import torch, torch.distributed as dist
    torch.set_num_threads(1)
    out = sys.argv[1]
    dist.init_process_group("gloo", init_method="file://" + out + "/init", rank=0, world_size=1)
    import deepspeed, transformers as T
    import osft.torch as ot
    deepspeed.utils.logger.setLevel(logging.WARNING)
    deepspeed.init_distributed(dist_backend="gloo")

    def build(stage, plain):
        torch.manual_seed(0)
        cfg = T.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24,
                            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
        m = T.AutoModelForCausalLM.from_config(cfg)
        o = ot.OSFT(m, frozen_ratio=0.5, freeze_others=True)
        zero = {"stage": stage}
        if stage == 3:
            zero["stage3_param_persistence_threshold"] = 0   # every parameter partitioned
        conf = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": zero,
                "steps_per_print": 10 ** 9}
        opt = torch.optim.AdamW(o.parameters(), lr=1e-2)
        eng, *_ = deepspeed.initialize(model=m, optimizer=opt, config=conf)
        ot.attach_deepspeed(eng, o)
        sd = m.state_dict()
        raw = any(".osft_" in k for k in sd) and "model.layers.0.mlp.up_proj.weight" not in sd
        if plain:
            o.plain_state_dict = True
        return eng, o, raw

    g = torch.Generator().manual_seed(1)
    data = [torch.randint(0, 50, (4, 8), generator=g) for _ in range(6)]

    def steps(eng, batches):
        out = []
        for x in batches:
            loss = eng(input_ids=x, labels=x).loss
            eng.backward(loss)
            eng.step()
            out.append(loss.item())
        return out

    res = {}
    for stage, plain in ((2, False), (3, False), (2, True)):
        d = os.path.join(out, f"ckpt{stage}{plain}")
        a, oa, raw = build(stage, plain)
        steps(a, data[:3])
        a.save_checkpoint(d, tag="t")
        la = steps(a, data[3:])
        b, ob, _ = build(stage, plain)
        try:
            b.load_checkpoint(d, tag="t")
            lb = steps(b, data[3:])
            wa, wb = oa.dense_weights(), ob.dense_weights()
            same_w = all(torch.equal(wa[k], wb[k]) for k in wa)
        except RuntimeError as e:   # loading plain weights can also fail outright at ZeRO-3
            lb, same_w = repr(e)[:200], False
        res[f"{stage}{'plain' if plain else 'raw'}"] = dict(a=la, b=lb, same_w=same_w, raw=raw)
    json.dump(res, open(os.path.join(out, "ds.json"), "w"))
    dist.destroy_process_group()
""")


def test_deepspeed_engine_checkpoint_resumes_exactly(tmp_path):
    pytest.importorskip("deepspeed")
    script = tmp_path / "ds.py"
    script.write_text(_DS_RUN)
    r = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "ds.json").read_text())
    for run in ("2raw", "3raw"):
        got = res[run]
        assert got["raw"], run                      # attach_deepspeed switched to factor entries
        assert len(got["a"]) == 3 and got["b"] == got["a"], (run, got)
        assert got["same_w"], run
    control = res["2plain"]
    assert control["b"] != control["a"] and not control["same_w"], control
