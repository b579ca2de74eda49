"""The Triton hash-grid kernels on the CPU, through Triton's interpreter (``TRITON_INTERPRET=1``): the three
program orders (level-major, point-major, level groups of 4, which 3 levels leave one short) and both table
precisions compute the reference function and its table gradient. Slow (the interpreter runs each program in
numpy) and skipped where the triton package is missing; tests/gpu runs them on CUDA."""

import textwrap

import pytest

from tests.backend.triton_interpreter import run_interpreted

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import sys, torch
    from backend.fields import HashGridConfig, encode_reference
    from backend.fields.hashgrid_triton import LEVEL_GROUPS, LEVEL_MAJOR, POINT_MAJOR, TritonHashGrid
    torch.manual_seed(0)
    for table_dtype in ("float16", "float32"):
        for order in (LEVEL_MAJOR, POINT_MAJOR, LEVEL_GROUPS):
            cfg = HashGridConfig(n_levels=3, n_features_per_level=2, log2_table_size=8, base_resolution=4,
                                 per_level_scale=3.0, bbox_min=(-3, -1, 0), bbox_max=(5, 2, 4),
                                 backend="triton", table_dtype=table_dtype)
            enc = TritonHashGrid(cfg, block=32, num_warps=1, order=order)
            with torch.no_grad():
                enc.table.normal_()
            x = torch.rand(300, 3) * torch.tensor([8.8, 3.3, 4.4]) + torch.tensor([-3.4, -1.15, -0.2])
            out = enc(x)
            read = enc.table.half().float() if table_dtype == "float16" else enc.table
            torch.testing.assert_close(out, encode_reference(enc.normalize(x), read, enc.layout), rtol=1e-5, atol=1e-5)
            g = torch.randn_like(out)
            (gt,) = torch.autograd.grad((out * g).sum(), enc.table)
            (gr,) = torch.autograd.grad((encode_reference(enc.normalize(x), enc.table, enc.layout) * g).sum(),
                                        enc.table)
            torch.testing.assert_close(gt, gr, rtol=1e-5, atol=1e-5)
            print(table_dtype, order, "ok")
""")


def test_kernels_in_the_interpreter_match_the_reference():
    assert run_interpreted(SCRIPT).count(" ok") == 6


ADAM = textwrap.dedent("""
    import torch
    from backend.fields.hashgrid_triton import TableAdam
    torch.manual_seed(0)
    p0 = torch.randn(5000)
    a, b = p0.clone().requires_grad_(True), p0.clone().requires_grad_(True)
    ref = torch.optim.Adam([a], lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    mine = TableAdam(b, lr=1e-2, betas=(0.9, 0.99), eps=1e-15, block=1024)
    for i in range(30):
        g = torch.randn(5000) * (i + 1)
        g[::7] = 0  # rows a batch did not touch
        a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        mine.step()
    torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
    assert float(mine.step_count) == 30 and not torch.equal(b.detach(), p0)
    print("adam ok")
""")


def test_the_table_adam_kernel_is_torch_adam():
    assert "adam ok" in run_interpreted(ADAM)
