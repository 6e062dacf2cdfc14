"""DeepSpeed: :func:`attach_deepspeed`, which keeps a DeepSpeed engine's training out of the
frozen subspace at ZeRO stages 0-3, in fp32 and in bf16/fp16 mixed precision; and
:func:`~osft.torch.zero3.gathered` (re-exported here), which ZeRO-3-partitioned OSFT factors
are read through.

deepspeed is not imported at module level: the engine is used through its documented API
(``engine.module``, ``engine.step()``, ``zero_optimization_stage()``, ``bfloat16_enabled()``,
``fp16_enabled()``) and its optimizer's fp32 master weights through the structures DeepSpeed's
own ``deepspeed.utils.safe_get_full_fp32_param`` / ``safe_set_local_fp32_param`` read.

Why act on the master weights: gradient projection (OSFT's autograd hooks, which run before
DeepSpeed's reduction hooks at every stage) is not enough under Adam, whose element-wise scaling
puts part of every update back into the frozen subspace. Outside DeepSpeed,
:class:`~osft.torch.OSFTOptimizer` retracts the parameters after each step. Inside it, at ZeRO
stages >= 1 or with mixed precision the optimizer steps fp32 master copies (flat partitions,
one slice per rank) that DeepSpeed copies over the module's parameters, so a retraction of the
module's parameters is overwritten at the next step. The hook therefore retracts the **fp32
master** of every trainable factor after each ``engine.step()``:
``U_low <- U_low - Q_U (Q_U^T U_low)``, ``V_low <- V_low - (V_low Q_V^T) Q_V``, with ``Q`` the
frozen basis (orthonormalised once in float64 when the module holds it in bf16/fp16, so that
the subspace the model computes with is removed exactly), and writes the result to the
low-precision copy the model computes with. A retraction rather than a projection of the
update: it needs no snapshot of the masters before the step (no extra memory, no hook inside
DeepSpeed's step) and also removes accumulated rounding drift; for factored groups the two give
the same parameters (the projection is linear and idempotent), as :class:`OSFTOptimizer` does.

Where the full master values are already on every rank, the retraction is local; where each rank
only holds a slice, it is the two-phase projection (each rank's partial coefficient
``Q_U^T X_r`` / ``X_r Q_V^T`` of its slice, one ``all_reduce`` of all of them together, then
each rank corrects its slice), so one collective of ``k x (R-k)`` coefficients per factor
instead of gathering the factors. Its memory per step, on every rank: the fp32 coefficients of
all factors in one buffer (``k x (R-k)`` per factor: ``k/N`` of an ``N x (R-k)`` factor's size,
up to half at a rank ratio of 0.5), and, one factor at a time, an fp32 copy of the rows that the
rank's slice touches (the slice plus at most two rows it splits); the full factors are not
built (except a transient fp32 copy of a low-precision parameter resident in full anyway):

============  ===========================  ============================================  ==========
ZeRO stage    precision                    where the master is / what is retracted        collective
============  ===========================  ============================================  ==========
0             fp32                         the module's parameters themselves              none
0             bf16 / fp16                  full flat fp32 copy on every rank              none
1, 2          fp32                         module parameters hold the full master          none
                                           values after the step: retracted locally,
                                           each rank copies its slice into its master
1, 2          bf16 / fp16                  each rank's fp32 slice (two-phase)              1 / step
3             fp32, bf16 / fp16            each rank's fp32 slice and its partition of     1 / step
                                           the module parameter (two-phase)
============  ===========================  ============================================  ==========

``mode="dense"`` groups (whose invariant needs the update's projection, i.e. a snapshot) are
supported at ZeRO stage 0 in fp32 only.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

import osft as _osft

from .context import context_for
from .model import OSFT
from .optim import OSFTOptimizer
from .zero3 import gathered, is_zero3

__all__ = ["attach_deepspeed", "gathered", "is_zero3"]


def _orthonormal(basis: torch.Tensor, side: str) -> torch.Tensor:
    """``basis`` itself when float32/64 (orthonormal from the SVD), else an orthonormal float32
    basis of the same span (QR in float64): ``(B,N,k)`` columns for ``"left"``, ``(B,k,M)`` rows
    for ``"right"``."""
    if basis.dtype in (torch.float32, torch.float64):
        return basis
    b = basis.double() if side == "left" else basis.double().transpose(-1, -2)
    q = torch.linalg.qr(b).Q
    q = q if side == "left" else q.transpose(-1, -2)
    return q.float().contiguous()


class _Factor:
    """One trainable factor (``u_low`` left or ``v_low`` right) and its fp32 basis."""

    def __init__(self, param: torch.nn.Parameter, side: str, basis: torch.Tensor):
        self.param, self.side = param, side
        self.basis32 = basis.float().contiguous() if basis.dtype == torch.float64 else basis

    def coef_shape(self, shape: torch.Size) -> Tuple[int, ...]:
        b, n, m = shape
        k = self.basis32.shape[-1] if self.side == "left" else self.basis32.shape[-2]
        return (b, k, m) if self.side == "left" else (b, n, k)


class _MasterRetraction:
    """The retraction of the fp32 masters after a DeepSpeed step (see the module docstring)."""

    def __init__(self, engine: Any, osft: OSFT, stage: int, mixed: bool):
        self.engine, self.osft, self.stage, self.mixed = engine, osft, stage, mixed
        self.factors: List[_Factor] = []
        for p, side, g in osft.projected_parameters():
            basis = g.u_high if side == "left" else g.v_high
            self.factors.append(_Factor(p, side, _orthonormal(basis.detach(), side)))
        if stage == 0 and mixed:
            self.kind = "flat"
            self._flat = self._flat_masters()
        elif stage in (1, 2) and not mixed:
            self.kind = "module"
        elif stage == 0:
            self.kind = "params"
        else:
            self.kind = "slices"

    # ---- stage 0, bf16 / fp16: DeepSpeed's FP16_Optimizer keeps one full flat fp32 copy of
    # every parameter group (its parameters concatenated in order), FP16_UnfusedOptimizer (used
    # on CPU) one fp32 tensor per parameter; either way on every rank.
    def _flat_masters(self) -> Dict[int, torch.Tensor]:
        opt = self.engine.optimizer
        groups = getattr(opt, "fp16_groups", None)
        flats = getattr(opt, "fp32_groups_flat", None)
        per_param = getattr(opt, "fp32_groups", None)
        if groups is None or (flats is None and per_param is None):
            raise ValueError(f"attach_deepspeed: unexpected optimizer {type(opt).__name__} at "
                             "ZeRO stage 0 with mixed precision (no fp32 master copies found)")
        out = {}
        for i, params in enumerate(groups):
            if flats is not None:
                off = 0
                for p in params:
                    out[id(p)] = flats[i].narrow(0, off, p.numel()).view(p.shape)
                    off += p.numel()
            else:
                out.update({id(p): m for p, m in zip(params, per_param[i])})
        if any(id(f.param) not in out for f in self.factors):
            raise ValueError("attach_deepspeed: OSFT's trainable factors are not all in the "
                             "engine's optimizer (pass o.parameters() or model.parameters())")
        return out

    @torch.no_grad()
    def __call__(self) -> None:
        if self.kind == "params":
            self.osft.retract()
        elif self.kind == "flat":
            for f in self.factors:
                master = self._flat[id(f.param)]
                self._project(f, master)
                f.param.data.copy_(master)
        elif self.kind == "module":
            self.osft.retract()
            for f in self.factors:
                m = getattr(f.param, "_hp_mapping", None)
                if m is not None:
                    a = m.lp_fragment_address
                    m.get_hp_fragment().data.copy_(
                        f.param.data.reshape(-1).narrow(0, a.start, a.numel))
        else:
            self._retract_slices()

    def _project(self, f: _Factor, x: torch.Tensor) -> None:
        ctx = context_for(x.device)
        if f.side == "left":
            _osft.project(ctx, "left", x, f.basis32, None)
        else:
            _osft.project(ctx, "right", x, None, f.basis32)

    # ---- stages 1-2 in bf16/fp16 and stage 3: each rank holds a contiguous slice of every
    # flattened master; two-phase projection with one all_reduce for all factors.
    def _slice(self, p) -> Tuple[torch.Size, int, Optional[torch.Tensor], Any]:
        """(full shape, first element of this rank's slice, the fp32 slice or None, group)."""
        if is_zero3(p):
            from deepspeed.utils import safe_get_local_fp32_param

            group = p.ds_process_group
            size = p.ds_tensor.ds_numel
            start = dist.get_rank(group) * size
            valid = max(0, min(size, p.ds_numel - start))
            local = safe_get_local_fp32_param(p)
            return p.ds_shape, start, (local.reshape(-1)[:valid] if valid else None), group
        m = getattr(p, "_hp_mapping", None)
        group = getattr(p, "_dp_group", None)
        if m is None or m.lp_fragment_address.numel == 0:
            return p.shape, 0, None, group
        return p.shape, m.lp_fragment_address.start, m.get_hp_fragment().reshape(-1), group

    def _retract_slices(self) -> None:
        slices = [(f, *self._slice(f.param)) for f in self.factors]
        if len({group for *_, group in slices}) != 1:
            raise RuntimeError("attach_deepspeed: OSFT's factors are in different data-parallel "
                               "groups")
        group = slices[0][-1]
        # Every factor's full coefficient tensor (k x r per matrix) as views of one flat buffer,
        # so that one all_reduce reduces them all without a concatenation.
        shapes = [f.coef_shape(shape) for f, shape, *_ in slices]
        flat = torch.zeros(sum(_numel(s) for s in shapes), dtype=torch.float32,
                           device=self.factors[0].basis32.device)
        coefs, off = [], 0
        for s in shapes:
            coefs.append(flat.narrow(0, off, _numel(s)).view(s))
            off += _numel(s)
        for (f, shape, start, local, _), c in zip(slices, coefs):
            if local is not None:
                # Rows this rank holds none of keep a zero coefficient (the all_reduce sums).
                _slice_rows(f, shape, start, local, c, apply=False)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        for (f, shape, start, local, _), c in zip(slices, coefs):
            p = f.param
            if p.numel() == _numel(shape):
                # The full low-precision parameter is resident on every rank (stages 1-2; at
                # stage 3 a persistent small parameter, which DeepSpeed re-gathers after its
                # step): apply the same correction, known in full from the reduced coefficient.
                # First: at stage 3 its storage may be the partition written below.
                x32 = p.data.float()
                _osft.project_apply(context_for(x32.device), f.side, f.basis32, c, x32)
                p.data.copy_(x32)
            if local is None:
                continue
            _write_slice(p, local, _slice_rows(f, shape, start, local, c, apply=True))


def _write_slice(p, local: torch.Tensor, new: torch.Tensor) -> None:
    """Store a factor's retracted slice in its fp32 master (and, at stage 3, the module's
    partition of it)."""
    if is_zero3(p):
        from deepspeed.utils import safe_set_local_fp32_param

        part = torch.zeros(p.ds_tensor.numel(), dtype=torch.float32, device=new.device)
        part[:new.numel()] = new
        safe_set_local_fp32_param(p, part)
        p.ds_tensor.data.view(-1)[:new.numel()].copy_(new)
    else:
        local.copy_(new)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _slice_rows(f: _Factor, shape, start: int, local: torch.Tensor, coef: torch.Tensor,
                apply: bool) -> torch.Tensor:
    """One rank's part of the two-phase projection of the ``(B, N, M)`` factor ``f`` whose
    flattened elements ``[start, start + local.numel())`` are ``local``, touching only the rows
    (``M`` elements each) that range covers: with ``apply=False`` writes this rank's partial
    coefficients into the entries of ``coef`` those rows contribute to (``Q_U[rows]^T X[rows]``
    left, ``X[rows] Q_V^T`` right); with ``apply=True`` corrects those rows with the reduced
    ``coef`` (``X[rows] -= Q_U[rows] coef`` left, ``coef[rows] Q_V`` right). Works on a copy of
    the rows, zero-padded where the slice splits its first or last row (zeros add nothing to
    the coefficients), and returns the slice's part of that copy."""
    _, n, m = (int(d) for d in shape)
    r0, r1 = start // m, -(-(start + local.numel()) // m)
    basis = f.basis32
    rows = torch.zeros((r1 - r0, m), dtype=torch.float32, device=basis.device)
    mine = rows.view(-1).narrow(0, start - r0 * m, local.numel())
    mine.copy_(local)
    ctx = context_for(rows.device)
    for b0, b1, i0, i1 in _row_segments(r0, r1, n):
        x = rows[b0 * n + i0 - r0:(b1 - 1) * n + i1 - r0].view(b1 - b0, i1 - i0, m)
        q = basis if basis.shape[0] == 1 else basis[b0:b1]
        if f.side == "left":
            q, c = q[:, i0:i1, :], coef[b0:b1]
        else:
            c = coef[b0:b1, i0:i1, :]
        if apply:
            _osft.project_apply(ctx, f.side, q, c, x)
        else:
            _osft.project_partial(ctx, f.side, q, x, c)
    return mine


def _row_segments(r0: int, r1: int, n: int):
    """Split the global rows ``[r0, r1)`` of a batch of ``n``-row matrices into
    ``(b0, b1, i0, i1)``: rows ``i0:i1`` of matrices ``b0:b1`` (a partial first or last matrix
    alone, the whole matrices between them together, so one call each)."""
    b = r0 // n
    while r0 < r1:
        i0 = r0 - b * n
        if i0 == 0 and r1 >= (b + 1) * n:
            b1 = r1 // n
            yield b, b1, 0, n
        else:
            b1 = b + 1
            yield b, b1, i0, min(r1, b1 * n) - b * n
        r0, b = b1 * n, b1


def _match_buffers(osft: OSFT) -> None:
    """DeepSpeed's bf16/fp16 mode converts the module's parameters, not its buffers: give the
    frozen factors (buffers) the trainable factors' dtype, so that every layer computes in one
    dtype, as a model loaded in that dtype would."""
    for g in osft.groups.values():
        lp = next((p.dtype for p in g.parameters(recurse=False)), None)
        if lp is None:
            continue
        for name, b in list(g._buffers.items()):
            if b is not None and b.is_floating_point() and b.dtype != lp:
                g._buffers[name] = b.to(lp)


def attach_deepspeed(engine: Any, osft: OSFT, retract: bool = True) -> Callable[[], None]:
    """Hook OSFT into a DeepSpeed engine's training loop (``engine.backward(loss)``,
    ``engine.step()``) at any ZeRO stage (0-3), fp32 or bf16/fp16; returns a function that
    detaches the hook.

    * Gradients: with ``OSFT(project_in_backward=True)`` (the default) they are projected in
      autograd tensor hooks while autograd produces them, before DeepSpeed's reduction hooks (by
      linearity this equals projecting the reduced gradient). Otherwise the hook calls
      :meth:`OSFT.project_gradients` before each ``engine.step()``, which only sees gradients at
      ZeRO stage 0 (stages >= 1 need ``project_in_backward=True``: ``ValueError``).
    * Update: after each ``engine.step()`` the fp32 master weights of the trainable factors are
      retracted out of the frozen subspace (``retract=True``, see the module docstring for how
      per stage and which collectives). ``retract=False`` leaves only the gradient projection
      (Adam then leaks slowly into the frozen subspace; :meth:`OSFT.leakage` measures it).
    * :class:`~osft.torch.OSFTOptimizer` as DeepSpeed's client optimizer works at ZeRO stage 0 in
      fp32 (DeepSpeed then steps the module's own parameters); elsewhere DeepSpeed hands the
      optimizer flat fp32 partitions instead of OSFT's parameters, and this function refuses it
      (``ValueError``: pass the plain optimizer and let this hook retract).
    * ``mode="dense"`` groups: ZeRO stage 0 in fp32 only (``ValueError`` otherwise); there the
      hook projects each step's update (a snapshot of the dense weights before the step).
    * Checkpoints: sets ``osft.plain_state_dict = False`` (restored by the returned function), so
      that ``model.state_dict()``, and with it ``engine.save_checkpoint`` /
      ``load_checkpoint``, carries the raw factors (``osft_*`` entries) that DeepSpeed's fp32
      masters and optimizer moments belong to, and a resume is exact. Plain dense weights
      loaded under OSFT would be decomposed again (a new frozen subspace) while DeepSpeed
      restores the masters of the old factors. For a plain model export use
      :meth:`OSFT.merged_state_dict` (a collective at ZeRO-3).
    """
    module = getattr(engine, "module", None)
    step = getattr(engine, "step", None)
    if module is None or not callable(step):
        raise TypeError("attach_deepspeed: expected a DeepSpeed engine (with .module and .step())")
    if not any(m is osft.model for m in module.modules()):
        raise ValueError("attach_deepspeed: the OSFT model is not inside engine.module")
    stage_fn = getattr(engine, "zero_optimization_stage", None)
    stage = int(stage_fn()) if callable(stage_fn) else 0
    mixed = [name.replace("_enabled", "") for name in ("fp16_enabled", "bfloat16_enabled")
             if callable(getattr(engine, name, None)) and getattr(engine, name)()]
    where = f"ZeRO stage {stage}" + (f" with {mixed[0]}" if mixed else "")
    if stage > 3:
        raise ValueError(f"attach_deepspeed: unknown ZeRO stage {stage}")
    if stage > 0 and not osft.project_in_backward:
        raise ValueError(f"attach_deepspeed: at ZeRO stage {stage} gradients must be projected "
                         "in backward hooks (OSFT(project_in_backward=True))")
    opt = getattr(engine, "optimizer", None)
    client = [o for o in (opt, getattr(opt, "optimizer", None)) if isinstance(o, OSFTOptimizer)]
    if client and (stage > 0 or mixed):
        raise ValueError(f"attach_deepspeed: an OSFTOptimizer as DeepSpeed's client optimizer "
                         f"does not work at {where}: DeepSpeed steps flat fp32 master "
                         "partitions, not OSFT's parameters. Pass the wrapped optimizer "
                         "(OSFTOptimizer.optimizer) to deepspeed.initialize; this hook retracts "
                         "the fp32 masters after each step")
    dense = [n for n, g in osft.groups.items() if g.mode == "dense" and g.projected()]
    if dense and (stage > 0 or mixed):
        raise ValueError(f"attach_deepspeed: mode='dense' is supported at ZeRO stage 0 in fp32 "
                         f"only, not at {where} (use mode='factored')")
    if mixed:
        _match_buffers(osft)
    retraction = None
    if retract and not client:
        retraction = _MasterRetraction(engine, osft, stage, bool(mixed))
        # Once now: masters initialised from bf16/fp16-rounded factors carry that rounding's
        # component in the frozen subspace (a collective where the step's retraction has one).
        retraction()
    project_dense = retract and bool(dense) and not client
    # engine.save_checkpoint / load_checkpoint go through module.state_dict() and
    # load_state_dict(): plain dense weights would be re-split on load (a new frozen subspace)
    # while DeepSpeed restores fp32 masters of the old factors. Raw factors resume exactly.
    plain = osft.plain_state_dict
    osft.plain_state_dict = False
    boundary = getattr(engine, "is_gradient_accumulation_boundary", None)

    original = engine.step

    def osft_step(*args, **kwargs):
        osft.project_unhooked_gradients()
        stepping = boundary() if callable(boundary) else True
        before = osft.snapshot({id(g.weight) for n, g in osft.groups.items() if n in dense}) \
            if project_dense and stepping else None
        out = original(*args, **kwargs)
        if before:
            osft.project_update(before)
        if retraction is not None and stepping:
            retraction()
        return out

    engine.step = osft_step

    def detach() -> None:
        if engine.step is osft_step:
            engine.step = original
            osft.plain_state_dict = plain

    return detach
