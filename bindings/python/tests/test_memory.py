"""No memory growth over 10 000 calls (RSS from /proc/self/statm, after a warm-up).

Each iteration allocates fresh 64 x 64 float64 arrays (32 KiB each), so a leaked reference to an
argument (e.g. a DLPack capsule whose deleter never runs) would grow RSS by hundreds of MiB;
the slack allows for allocator noise only.
"""

import gc
import os

import numpy as np
import pytest
from conftest import random_basis

import osft

SLACK_BYTES = 4 << 20
CALLS = 10_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class DLPackOnly:
    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kw):
        return self.a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def run_calls(ctx, proj, u, v, n):
    for i in range(n):
        x = np.full((64, 64), float(i % 7))
        kind = i % 6
        if kind == 0:
            osft.project(ctx, "both", x, u, v)
        elif kind == 1:
            osft.project(ctx, "left", DLPackOnly(x), DLPackOnly(u))
        elif kind == 2:
            proj.apply(x, np.empty_like(x))
        elif kind == 3:
            osft.leakage(ctx, "right", v, x)
        elif kind == 4:
            osft.decompose_np(x[:8, :6] + np.eye(8, 6), 2, ctx=ctx)
        else:
            try:
                osft.project(ctx, "left", x[:5], u)  # wrong shape: an OsftError
            except osft.InvalidShapeError:
                pass


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_memory_growth():
    rng = np.random.default_rng(7)
    u = random_basis(rng, 64, 8)
    v = random_basis(rng, 64, 8).T.copy()
    with osft.Context() as ctx, osft.Projector(ctx, "both", u, v) as proj:
        run_calls(ctx, proj, u, v, 2000)  # warm-up: workspaces, caches, allocator arenas
        gc.collect()
        before = rss_bytes()
        run_calls(ctx, proj, u, v, CALLS)
        gc.collect()
        after = rss_bytes()
    growth = after - before
    print(f"RSS before {before / 2**20:.1f} MiB, after {CALLS} calls {after / 2**20:.1f} MiB, "
          f"growth {growth / 2**10:.0f} KiB")
    assert growth < SLACK_BYTES, f"RSS grew by {growth} bytes over {CALLS} calls"
