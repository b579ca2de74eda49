"""Hash grid paths that only CUDA has (run on the GPU machine: ``pytest -m gpu tests/backend/fields``)."""

import pytest
import torch

from backend.fields import HashGridConfig, encode_reference, make_encoding, triton_available

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_the_torch_hash_grid_on_cuda_is_captured_as_a_cuda_graph():
    """``MotionField`` captures its training step as a CUDA graph; the torch hash grid (CUDA without Triton) must
    not read a value back to the host in it (its dense fast path did, once per level: capture raised)."""
    cfg = HashGridConfig(n_levels=6, log2_table_size=16, base_resolution=8, per_level_scale=1.6, backend="torch")
    enc = make_encoding(cfg).cuda()
    x = torch.rand(4096, 3, device="cuda") * 2 - 1
    w = torch.randn(4096, cfg.output_dim, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up on the capture stream
            enc.table.grad = None
            (enc(x) * w).sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    enc.table.grad = torch.zeros_like(enc.table)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        out = enc(x)
        (out * w).sum().backward()
    enc.table.grad.zero_()
    graph.replay()
    torch.cuda.synchronize()
    ref = encode_reference(enc.normalize(x), enc.table, enc.layout)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    expected = torch.autograd.grad((ref * w).sum(), enc.table)[0]
    torch.testing.assert_close(enc.table.grad, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not triton_available(), reason="needs triton")
def test_the_float16_copy_is_not_reused_for_another_table_of_the_same_version():
    """The Triton grid keeps its float16 copy of the table while the table is unchanged; a replaced parameter
    (another storage) at the same version counter is read anew, not from the old copy."""
    enc = make_encoding(HashGridConfig(n_levels=4, log2_table_size=12, backend="triton")).cuda()
    x = torch.rand(10_000, 3, device="cuda") * 2 - 1
    new = torch.nn.Parameter(enc.table.detach() + 0.5)
    with torch.no_grad():
        while new._version < enc.table._version:
            new.add_(0.0)
        while enc.table._version < new._version:
            enc.table.add_(0.0)
        assert new._version == enc.table._version
        a = enc(x)
        enc.table = new
        b = enc(x)
    ref = encode_reference(enc.normalize(x), new.half().float(), enc.layout)
    torch.testing.assert_close(b, ref, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(a, b)
