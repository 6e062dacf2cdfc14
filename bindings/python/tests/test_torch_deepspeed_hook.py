"""osft.torch's DeepSpeed hook (attach_deepspeed) against a duck-typed engine: retraction at
stage 0, the refusals, checkpoints that carry the raw factors. (The real DeepSpeed engine:
test_torch_deepspeed.py.) Skipped without torch."""

import pytest
from torch_helpers import LLAMA_TARGETS, data, groups_leak_tol, tiny

torch = pytest.importorskip("torch")
ot = pytest.importorskip("osft.torch")


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
    assert max(o.leakage().values()) <= groups_leak_tol(o)      # the retraction's last projection
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
    # One SGD step on projected gradients: the SVD's orthogonality and one projection's rounding.
    assert max(o.leakage().values()) <= groups_leak_tol(o)


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


def test_attach_deepspeed_mixed_precision_refusals():
    m = tiny()
    o = ot.OSFT(m, mode="dense")
    eng = FakeEngine(m, torch.optim.SGD(o.parameters(), lr=0.1))
    eng.bfloat16_enabled = lambda: True
    eng.fp16_enabled = lambda: False
    with pytest.raises(ValueError, match="mode='dense' is supported at ZeRO stage 0 in fp32 only"):
        ot.attach_deepspeed(eng, o)
