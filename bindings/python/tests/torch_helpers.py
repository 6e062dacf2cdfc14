"""Shared by the osft.torch workflow tests (``test_torch_targets.py``, ``test_torch_ranks.py``,
``test_torch_decompose.py``, ``test_torch_projection.py``, ``test_torch_lifecycle.py``,
``test_torch_deepspeed_hook.py``, ``test_torch_distributed.py``): small models with Hugging Face
module names, their inputs, and a counter of libosft calls. It needs torch, so it is a module of
its own rather than part of conftest.py (which every test imports, also without torch); importing
it skips the importing test module when torch is missing."""

import numpy as np
import pytest
from conftest import BF16, project_tol, reconstruct_tol, svd_tol, unit_roundoff

import osft

torch = pytest.importorskip("torch")
nn = torch.nn
torch.set_num_threads(1)   # tiny matrices: threads only add contention


# --------------------------------------------------------------------------------------------
# Tolerances from the unit roundoff (conftest's helpers, for torch dtypes).

def np_dtype(dt):
    """The numpy dtype of a torch dtype (numpy dtypes pass through)."""
    return {torch.float64: np.dtype(np.float64), torch.float32: np.dtype(np.float32),
            torch.float16: np.dtype(np.float16), torch.bfloat16: BF16}.get(dt, dt)


def leak_tol(dt, n, m, k) -> float:
    """Bound on ``||U_h^T G'||_F / ||G||_F`` (or the V side) for ``G'`` a gradient projected in
    ``dt`` against the ``k`` frozen vectors of an ``n x m`` weight: the projection's rounding
    (project_tol) plus the basis's departure from orthonormality (``U^T U = I + E`` leaves
    ``E U^T G``; ``||E||`` within svd_tol of osft.torch's default float64 SVD stored in ``dt``)."""
    d = np_dtype(dt)
    return project_tol(d, max(n, m), k) + svd_tol(n, m, np.float64, d)


def weight_tol(dt, n, m) -> float:
    """Bound on ``||W' - W||_F / ||W||_F`` of a weight rebuilt from its factors (conftest's
    reconstruct_tol: osft.torch's default float64 SVD, factors stored in ``dt``), plus the
    rebuilt weight's own rounding to ``dt``."""
    d = np_dtype(dt)
    return reconstruct_tol(n, m, np.float64, d) + unit_roundoff(d)


def model_tol(dt, layers, inner, n, m) -> float:
    """Bound on ``max|y' - y| / max|y|`` of a model whose ``layers`` linear layers (at most
    ``n x m``, inner lengths at most ``inner``) were rebuilt or refactorised: each layer's output
    moves by its weight's bound plus the GEMM's ``4 inner u`` (test_torch_forward_precision's
    forward_tol), and the moves add up through maps of Lipschitz constant about 1."""
    return layers * (4 * inner * unit_roundoff(np_dtype(dt)) + weight_tol(dt, n, m))


def dims(g):
    """``(n, m, k)`` of an OSFT group: its weights are ``n x m`` with ``k`` frozen vectors."""
    return g.u_high.shape[-2], g.v_high.shape[-1], g.k


def groups_leak_tol(o, dt=torch.float64) -> float:
    """The largest leak_tol over an OSFT's groups: a bound on its leakage() (``||U_h^T U_l|| /
    ||U_l||``) when U_low was last projected in ``dt``."""
    return max(leak_tol(dt, *dims(g)) for g in o.groups.values())


def rel_err(a, b) -> float:
    """``||a - b||_F / ||b||_F`` in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def max_rel_err(a, b) -> float:
    """``max|a - b| / max|b|`` in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


def leak(basis, grad, side) -> float:
    """``||U^T G||_F`` (left side) or ``||G V^T||_F`` (right side) of batched float64 copies."""
    b, g = basis.detach().double(), grad.detach().double()
    return float((b.transpose(-1, -2) @ g if side == "left" else g @ b.transpose(-1, -2)).norm())


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
# A counter of libosft calls (the functions' batching is part of the contract).

class Counter:
    def __init__(self, monkeypatch, *names):
        self.n = {k: 0 for k in names}
        for name in names:
            fn = getattr(osft._lib.lib, name)

            def wrapped(*a, _fn=fn, _name=name):
                self.n[_name] += 1
                return _fn(*a)

            monkeypatch.setattr(osft._lib.lib, name, wrapped)
