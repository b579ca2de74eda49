"""The fused gather kernel (``frames_triton``, what a 4D frame runs on CUDA) against the torch path of
``gather_frame``, on the CPU through Triton's interpreter: whole and fractional times, every channel, clamped
opacity and scale. Slow; skipped where triton is missing; tests/gpu runs it on CUDA."""

import textwrap

import pytest

from tests.backend.triton_interpreter import run_interpreted

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import os, torch
    from backend.gaussians import Gaussians
    from backend.render.frames import DeviceSequence, gather_frame
    g = torch.Generator().manual_seed(0)
    N, M, T = 400, 250, 4
    base = Gaussians(means=torch.randn(N, 3, generator=g), quats=torch.randn(N, 4, generator=g),
                     log_scales=torch.randn(N, 3, generator=g), opacity_logits=torch.randn(N, generator=g),
                     sh=torch.randn(N, 4, 3, generator=g))
    idx = torch.randperm(N, generator=g)[:M]
    ch = {"position": torch.randn(T, M, 3, generator=g),
          "rotation": torch.nn.functional.normalize(torch.randn(T, M, 4, generator=g), dim=-1),
          "scale": torch.rand(T, M, 3, generator=g) * 0.1, "opacity": torch.rand(T, M, generator=g),
          "color": torch.rand(T, M, 3, generator=g)}
    ch["opacity"][0, :5] = 0.0
    ch["scale"][0, :3, 0] = 0.0
    for names in (list(ch), ["position"], ["position", "opacity"]):
        for t in (0.0, 1.3, 2.7, 3.5):
            outs = []
            for interp in ("1", "0"):  # the kernel, then the torch code
                os.environ["TRITON_INTERPRET"] = interp
                b = Gaussians(**{k: getattr(base, k).clone() for k in ("means", "quats", "log_scales",
                                                                       "opacity_logits", "sh")})
                seq = DeviceSequence(base=b, dynamic_index=idx, channels={k: ch[k] for k in names}, frame_count=T,
                                     loop=True)
                outs.append(gather_frame(seq, t))
            for k in ("means", "quats", "log_scales", "opacity_logits", "sh"):
                torch.testing.assert_close(getattr(outs[0], k), getattr(outs[1], k), rtol=2e-6, atol=2e-6)
            print("ok")
""")


def test_fused_gather_matches_the_torch_path():
    assert run_interpreted(SCRIPT).count("ok") == 12
