"""osft.torch target selection: the default targets of each model type, GPT-2's Conv1D,
user patterns (glob, regex, exclusions) and their errors. Skipped without torch."""

import pytest
from torch_helpers import LLAMA_TARGETS, Conv1D, tiny

torch = pytest.importorskip("torch")
nn = torch.nn
ot = pytest.importorskip("osft.torch")


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
