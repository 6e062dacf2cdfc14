"""PyTorch tensors through DLPack, and the CUDA stream handling. Skipped cleanly without torch
(torch is not installed in the project's test venv)."""

import numpy as np
import pytest
from conftest import BF16, CUDA_SKIP, GPU_SKIP, project_tol, reconstruct_tol, svd_tol

import osft

torch = pytest.importorskip("torch")


def ref_left(x, u):
    x, u = x.double().cpu().numpy(), u.double().cpu().numpy()
    return x - u @ (u.T @ x)


def test_cpu_tensors_zero_copy():
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(10, 3, generator=g, dtype=torch.float64))
    x = torch.randn(10, 6, generator=g, dtype=torch.float64)
    want = ref_left(x, u)
    tol = project_tol(np.float64, 10, 3)   # float64, one side: relative to ||X||_F

    def close(got, want, x_norm):
        return np.linalg.norm(got.detach().numpy() - want) < tol * x_norm

    with osft.Context() as ctx:
        ptr = x.data_ptr()
        x_norm = x.norm().item()
        osft.project(ctx, "left", x, u)
        assert x.data_ptr() == ptr
        assert close(x, want, x_norm)
        # A transposed view and a requires_grad tensor (detached, memory shared).
        xt = torch.randn(6, 10, generator=g, dtype=torch.float64).t()
        want, x_norm = ref_left(xt, u), xt.norm().item()
        osft.project(ctx, "left", xt, u)
        assert close(xt, want, x_norm)
        p = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
        out = torch.empty(10, 6, dtype=torch.float64)
        osft.project(ctx, "left", p, u, out=out)
        assert close(out, ref_left(p.detach(), u), p.norm().item())


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cpu_tensor_dtypes(dtype):
    dt = getattr(torch, dtype)
    w = torch.randn(12, 8, dtype=torch.float64).to(dt)
    with osft.Context() as ctx:
        parts = [torch.empty(12, 3, dtype=dt), torch.empty(3, dtype=dt), torch.empty(3, 8, dtype=dt),
                 torch.empty(12, 5, dtype=dt), torch.empty(5, dtype=dt), torch.empty(5, 8, dtype=dt)]
        osft.decompose(ctx, w, 3, *parts)
        rec = torch.empty(12, 8, dtype=torch.float64)
        osft.reconstruct(ctx, rec, *parts)
        wd = w.double()
        # Decomposed in float32 (the default for these dtypes), factors stored in dtype.
        np_dt = {"float32": np.float32, "float16": np.float16}.get(dtype, "bfloat16")
        assert ((rec - wd).norm() / wd.norm()).item() < svd_tol(12, 8, np.float32, np_dt)
        x = torch.randn(12, 4, dtype=torch.float64).to(dt)
        want = ref_left(x, parts[0])
        x_norm = x.double().norm().item()
        osft.project(ctx, "left", x, parts[0])
        err = np.linalg.norm(x.double().numpy() - want) / x_norm
        assert err < project_tol(np_dt, 12, 3)


def test_caller_workspace_is_used_in_place():
    with osft.Context() as ctx:
        # Views that a reshape would copy are refused: the copy would be freed under the library.
        for view in (torch.zeros(64, 2).t(), torch.zeros(8, 8)[:, :4]):
            with pytest.raises(osft.InvalidStrideError):
                ctx.set_workspace(view)
            assert ctx.workspace_bytes == 0
        # Any dtype; the library writes into the tensor itself.
        g = torch.Generator().manual_seed(2)
        u, _ = torch.linalg.qr(torch.randn(64, 8, generator=g))
        x = torch.randn(64, 32, generator=g)
        assert 0 < osft.project_workspace_size(ctx, "left", x, u) <= 4096
        ws = torch.zeros(4096, dtype=torch.uint8)
        ctx.set_workspace(ws)
        assert ctx.workspace_bytes == 4096
        want = ref_left(x, u)
        osft.project(ctx, "left", x, u)
        assert ws.any(), "the projection's scratch did not go to the caller's tensor"
        assert ctx.workspace_bytes == 4096
        np.testing.assert_allclose(x.numpy(), want, atol=1e-5)


def _cuda_ctx():
    if not torch.cuda.is_available():
        pytest.skip(f"{GPU_SKIP} (no CUDA device visible to torch)")
    try:
        return osft.Context("cuda")
    except osft.BackendUnavailableError as e:
        pytest.skip(f"{CUDA_SKIP} although torch sees a GPU: {e.message}")


def test_cuda_tensors_on_current_stream():
    ctx = _cuda_ctx()
    with ctx:
        g = torch.Generator().manual_seed(1)
        u, _ = torch.linalg.qr(torch.randn(64, 8, generator=g))
        x = torch.randn(64, 32, generator=g)
        want = ref_left(x, u)
        ud, xd = u.cuda(), x.cuda()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())   # the copies above ran on the default stream
        with torch.cuda.stream(s):
            osft.project(ctx, "left", xd, ud)
            assert ctx.stream == s.cuda_stream
        s.synchronize()
        np.testing.assert_allclose(xd.cpu().numpy(), want, atol=1e-4)
        # Back on the default stream: the context follows.
        y = x.cuda()
        osft.project(ctx, "left", y, ud)
        assert (ctx.stream or 0) == torch.cuda.current_stream().cuda_stream
        torch.cuda.synchronize()
        np.testing.assert_allclose(y.cpu().numpy(), want, atol=1e-4)
        # bf16 on the GPU, against float64 from the stored bf16 values.
        xb, ub = x.to(torch.bfloat16).cuda(), ud.to(torch.bfloat16)
        want_b, xb_norm = ref_left(xb, ub), xb.double().norm().item()
        osft.project(ctx, "left", xb, ub)
        torch.cuda.synchronize()
        err = np.linalg.norm(xb.double().cpu().numpy() - want_b) / xb_norm
        assert err < project_tol(BF16, 64, 8), err
        # A host tensor given to a CUDA context, and workspaces: host memory is refused, a
        # device byte buffer serves the next call.
        with pytest.raises(osft.DeviceMismatchError):
            osft.project(ctx, "left", x, ud)
        with pytest.raises(osft.DeviceMismatchError):
            ctx.set_workspace(np.zeros(1 << 16, dtype=np.uint8))
        ws = torch.zeros(1 << 16, dtype=torch.uint8, device="cuda")
        ctx.set_workspace(ws)
        assert ctx.workspace_bytes == 1 << 16
        y = x.cuda()
        osft.project(ctx, "left", y, ud)
        torch.cuda.synchronize()
        np.testing.assert_allclose(y.cpu().numpy(), want, atol=1e-4)
        ctx.release_workspace()


def test_cuda_decompose_matches_cpu():
    ctx = _cuda_ctx()
    with ctx:
        w = torch.randn(48, 40, dtype=torch.float64)
        k = 10
        parts = [torch.empty(48, k), torch.empty(k), torch.empty(k, 40),
                 torch.empty(48, 40 - k), torch.empty(40 - k), torch.empty(40 - k, 40)]
        dparts = [p.cuda() for p in parts]
        osft.decompose(ctx, w.cuda(), k, *dparts)
        torch.cuda.synchronize()
        s = np.linalg.svd(w.numpy(), compute_uv=False)
        got = np.concatenate([osft.read_vector(ctx, dparts[1]), osft.read_vector(ctx, dparts[4])])
        np.testing.assert_allclose(got, s, rtol=1e-4)
        # The factors themselves: reconstruction and orthonormality in float64 from the stored
        # float32 values.
        uh, sh, vh, ul, sl, vl = [p.double().cpu() for p in dparts]
        rec = uh @ torch.diag(sh) @ vh + ul @ torch.diag(sl) @ vl
        assert (rec - w).norm() / w.norm() <= reconstruct_tol(48, 40, np.float64, np.float32)
        u, v = torch.cat([uh, ul], 1), torch.cat([vh, vl], 0)
        eye = torch.eye(40, dtype=torch.float64)
        tol = svd_tol(48, 40, np.float64, np.float32)
        assert (u.T @ u - eye).norm() <= tol and (v @ v.T - eye).norm() <= tol
