"""Hash-grid encoding on CUDA: Triton kernel vs the torch reference (and tiny-cuda-nn when installed).

Default config (16 levels x 2 features, 2^19 rows, base 16, scale 1.447), uniform random points in the box.
Checks Triton against the reference on 1M points, then times forward and forward+backward (table gradient)
per size with CUDA events (median of 20 after 5 warm-ups). Prints a markdown table.

    python bench/fields_hashgrid_gpu.py
"""

import torch

from backend.fields import HashGridConfig, encode_reference, make_encoding, tcnn_available
from backend.fields.hashgrid_triton import TritonHashGrid


def timed(fn, reps=20, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def main():
    torch.manual_seed(0)
    cfg = HashGridConfig(backend="torch")
    ref = make_encoding(cfg).cuda()
    with torch.no_grad():
        ref.table.uniform_(-1, 1)
    encs = {"torch": ref}
    for block in (128, 256, 512):
        e = TritonHashGrid(cfg, block=block).cuda()
        e.load_state_dict(ref.state_dict())
        encs[f"triton-b{block}"] = e
    if tcnn_available():
        e = make_encoding(HashGridConfig(backend="tcnn")).cuda()
        e.load_state_dict(ref.state_dict())
        encs["tcnn"] = e
    x = torch.rand(1 << 20, 3, device="cuda") * 2 - 1
    want = encode_reference(ref.normalize(x), ref.table, ref.layout)
    g = torch.randn_like(want)
    (gref,) = torch.autograd.grad((want * g).sum(), ref.table)
    for name, e in encs.items():
        out = e(x)
        (gt,) = torch.autograd.grad((out * g).sum(), e.table)
        print(f"check {name}: max |out - ref| = {(out - want).abs().max().item():.2e}, "
              f"max |grad - ref| = {(gt - gref).abs().max().item():.2e}")
    print("\n| encoding | points | forward ms | fwd+bwd ms | forward M queries/s | speed-up fwd vs torch |")
    print("|---|---|---|---|---|---|")
    for n in (1 << 18, 1 << 20, 1 << 22):
        x = torch.rand(n, 3, device="cuda") * 2 - 1
        base = None
        for name, e in encs.items():
            gout = torch.randn(n, e.output_dim, device="cuda")

            def fwd(e=e, x=x):
                with torch.no_grad():
                    e(x)

            def fwdbwd(e=e, x=x, gout=gout):
                e.table.grad = None
                (e(x) * gout).sum().backward()

            tf, tb = timed(fwd), timed(fwdbwd)
            base = tf if name == "torch" else base
            print(f"| {name} | {n} | {tf:.3f} | {tb:.3f} | {n / tf / 1e3:.0f} | {base / tf:.1f}x |")


if __name__ == "__main__":
    main()
