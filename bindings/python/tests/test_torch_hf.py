"""osft.torch on real Hugging Face architectures (tiny random configs, nothing downloaded):
default targets, exact forward after decomposition, a training step, merged checkpoints that
load into a fresh model, and merge() restoring the plain model. Skipped without torch and
transformers."""

import numpy as np
import pytest
from conftest import unit_roundoff

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")
ot = pytest.importorskip("osft.torch")
torch.set_num_threads(1)
from torch_helpers import groups_leak_tol, weight_tol  # noqa: E402  (after the skips: needs torch)

V = 50
_DENSE = dict(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
              num_attention_heads=2, num_key_value_heads=1)
_MOE = dict(_DENSE, num_local_experts=3, num_experts_per_tok=2)

# name: (config factory, expected targets per layer (suffixes), dtype)
_LLAMA = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
          "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
          "mlp.down_proj.weight"]
CASES = {
    "llama": (lambda: T.LlamaConfig(**_DENSE), _LLAMA, torch.float64),
    "mistral": (lambda: T.MistralConfig(**_DENSE), _LLAMA, torch.float64),
    "qwen2": (lambda: T.Qwen2Config(**_DENSE), _LLAMA, torch.float64),
    "gemma": (lambda: T.GemmaConfig(**_DENSE, head_dim=8), _LLAMA, torch.float64),
    "granite": (lambda: T.GraniteConfig(**_DENSE), _LLAMA, torch.float64),
    "phi3": (lambda: T.Phi3Config(**dict(_DENSE, num_key_value_heads=2), pad_token_id=0),
             ["self_attn.o_proj.weight", "self_attn.qkv_proj.weight", "mlp.gate_up_proj.weight",
              "mlp.down_proj.weight"], torch.float64),
    "gpt2": (lambda: T.GPT2Config(vocab_size=V, n_embd=16, n_layer=2, n_head=2, n_positions=32),
             ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"],
             torch.float64),
    "opt": (lambda: T.OPTConfig(vocab_size=V, hidden_size=16, ffn_dim=24, num_hidden_layers=2,
                                num_attention_heads=2, word_embed_proj_dim=16,
                                max_position_embeddings=32),
            ["self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.q_proj.weight",
             "self_attn.out_proj.weight", "fc1.weight", "fc2.weight"], torch.float64),
    "gptj": (lambda: T.GPTJConfig(vocab_size=V, n_embd=16, n_layer=2, n_head=2, rotary_dim=4,
                                  n_positions=32),
             ["attn.k_proj.weight", "attn.v_proj.weight", "attn.q_proj.weight",
              "attn.out_proj.weight", "mlp.fc_in.weight", "mlp.fc_out.weight"], torch.float64),
    "t5": (lambda: T.T5Config(vocab_size=V, d_model=16, d_kv=8, d_ff=24, num_layers=2,
                              num_heads=2, decoder_start_token_id=0, pad_token_id=0),
           None, torch.float64),
    "gpt_neo": (lambda: T.GPTNeoConfig(vocab_size=V, hidden_size=16, num_layers=2, num_heads=2,
                                       attention_types=[[["global", "local"], 1]], window_size=4,
                                       max_position_embeddings=32, bos_token_id=0,
                                       eos_token_id=0),
                ["attn.attention.q_proj.weight", "attn.attention.k_proj.weight",
                 "attn.attention.v_proj.weight", "attn.attention.out_proj.weight",
                 "mlp.c_fc.weight", "mlp.c_proj.weight"], torch.float64),
    # One Gated DeltaNet (linear attention) layer and one full-attention layer: both kinds.
    "qwen3_5_text": (lambda: T.Qwen3_5TextConfig(
        **_DENSE, head_dim=8, linear_num_value_heads=2, linear_num_key_heads=2,
        linear_key_head_dim=8, linear_value_head_dim=8,
        layer_types=["linear_attention", "full_attention"]),
        None, torch.float64),
    "mixtral": (lambda: T.MixtralConfig(**_MOE),
                ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                 "self_attn.o_proj.weight", "mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
                torch.float32),
}


def _make(name, cfg):
    if name == "t5":
        return T.T5ForConditionalGeneration(cfg)
    return T.AutoModelForCausalLM.from_config(cfg)


def _batch(name):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (2, 6), generator=g)
    if name == "t5":
        return dict(input_ids=ids, labels=torch.randint(0, V, (2, 5), generator=g))
    return dict(input_ids=ids, labels=ids)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hf_architecture(name):
    make_cfg, per_layer, dtype = CASES[name]
    torch.manual_seed(0)
    cfg = make_cfg()
    m = _make(name, cfg).to(dtype).eval()
    kw = _batch(name)
    loss0 = m(**kw).loss.item()
    names0 = [n for n, _ in m.named_parameters()]
    sd0 = {k: v.clone() for k, v in m.state_dict().items()}

    o = ot.OSFT(m, frozen_ratio=0.5)
    got = [t.name for t in o.targets]
    # The decomposition is exact at the weights, every layout included (the loss check below is
    # only as sensitive as the float32 modules of a float64 model allow).
    for t_name, w in o.dense_weights().items():
        w0 = sd0[t_name]
        assert w.shape == w0.shape and w.dtype == w0.dtype, t_name
        assert (w - w0).norm() <= weight_tol(dtype, *w0.shape[-2:]) * w0.norm(), t_name
    if per_layer is not None:
        assert len(got) == 2 * len(per_layer), got            # two layers
        assert sorted(got) == sorted(n for n in names0 for s in per_layer if n.endswith(s)), got
    elif name == "qwen3_5_text":  # linear_attn.{in_proj_*,out_proj} in layer 0, Llama's in 1
        lin = ["in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj"]
        mlp = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
        assert sorted(got) == sorted(
            [f"model.layers.0.linear_attn.{p}.weight" for p in lin]
            + [f"model.layers.{i}.{p}.weight" for i in (0, 1) for p in mlp]
            + [f"model.layers.1.self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj",
                                                                 "o_proj")]), got
    else:  # T5: q, k, v, o of every attention, wi / wo of every FFN
        assert len(got) == 2 * 6 + 2 * 10 and all(n.split(".")[-2] in {"q", "k", "v", "o", "wi", "wo"}
                                                  for n in got)
    if dtype == torch.float64:
        # Norms (Llama-family RMSNorm, T5's variance) and some attentions (GPT-J, GPT-Neo) compute
        # in float32 even in float64 models: a float64 rounding difference upstream can flip one
        # of their float32 roundings, moving that module's output by 2 u32 of its size; the loss
        # moves by at most that per such module (the rest Lipschitz about 1), doubled for slack.
        # The float64 GEMMs' rounding is far below it.
        f32_modules = sum(any(w in type(mod).__name__.lower() for w in ("norm", "attention"))
                          for mod in m.modules())
        tol = 4 * f32_modules * unit_roundoff(np.float32)
    else:
        tol = 1e-5
    assert abs(m(**kw).loss.item() - loss0) <= tol * max(1.0, abs(loss0))
    if name == "gpt2":
        assert {t.kind for t in o.targets} == {"conv1d"}
    if name == "mixtral":
        assert "experts" in {t.kind for t in o.targets}

    m.train()
    opt = ot.OSFTOptimizer(torch.optim.Adam(o.parameters(), lr=1e-3), o)
    for _ in range(2):
        opt.zero_grad()
        m(**kw).loss.backward()
        opt.step()
    assert max(o.leakage().values()) <= groups_leak_tol(o, dtype)   # the retraction's last projection
    m.eval()
    loss1 = m(**kw).loss.item()
    assert loss1 != loss0                        # it trained

    sd = o.merged_state_dict()
    assert set(sd) == set(sd0)
    for t_name, w in o.dense_weights().items():   # the trained weights, rebuilt from the factors
        assert (sd[t_name] - w).norm() <= weight_tol(dtype, *w.shape[-2:]) * w.norm(), t_name
    fresh = _make(name, cfg).to(dtype).eval()
    fresh.load_state_dict(sd)
    assert abs(fresh(**kw).loss.item() - loss1) <= tol * max(1.0, abs(loss1))
    o.merge()
    assert [n for n, _ in m.named_parameters()] == names0
    assert abs(m(**kw).loss.item() - loss1) <= tol * max(1.0, abs(loss1))


_LLAMA_MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def _llava():
    vis = T.CLIPVisionConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                             num_attention_heads=2, image_size=8, patch_size=4)
    return T.LlavaForConditionalGeneration(
        T.LlavaConfig(vision_config=vis, text_config=T.LlamaConfig(**_DENSE),
                      image_token_index=V - 1))


def _mllama():
    vis = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_global_layers=1,
               attention_heads=2, image_size=8, patch_size=4, vision_output_dim=32,
               max_num_tiles=4, intermediate_layers_indices=[0])
    text = dict(_DENSE, cross_attention_layers=[1], bos_token_id=0, eos_token_id=1,
                pad_token_id=2)
    return T.MllamaForConditionalGeneration(T.MllamaConfig(vision_config=vis, text_config=text))


@pytest.mark.parametrize("make,cross", [(_llava, False), (_mllama, True)])
def test_vision_language_models_target_the_text_backbone(make, cross):
    """The language model's linear layers only: the vision tower (whose layers carry the same
    self_attn.q_proj names) and the multi-modal projector are left alone. Mllama's text model
    has a cross-attention layer (index 1) in place of self-attention."""
    torch.manual_seed(0)
    m = make()
    o = ot.OSFT(m, frozen_ratio=0.5)
    got = sorted(t.name for t in o.targets)
    attn = {0: "self_attn", 1: "cross_attn" if cross else "self_attn"}
    want = sorted(f"model.language_model.layers.{i}.{mod.replace('self_attn', attn[i])}.weight"
                  for i in (0, 1) for mod in _LLAMA_MODULES)
    assert got == want
