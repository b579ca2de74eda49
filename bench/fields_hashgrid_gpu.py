"""Hash-grid encoding on CUDA: Triton kernel vs the torch reference (and tiny-cuda-nn when installed).

Default config (16 levels x 2 features, 2^19 rows, base 16, scale 1.447), uniform random points in the box.
First sweeps the Triton launch settings (block, warps, program order) on 1M points, forward and forward+backward;
then checks the default and the fastest settings against the reference on 1M points and times forward and
forward+backward (table gradient) per size with CUDA events (median of 20 after 5 warm-ups). Prints markdown
tables.

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


def fwd(e, x):
    with torch.no_grad():
        e(x)


def fwdbwd(e, x, gout):
    e.table.grad = None
    (e(x) * gout).sum().backward()


def main():
    torch.manual_seed(0)
    cfg = HashGridConfig(backend="torch")
    ref = make_encoding(cfg).cuda()
    with torch.no_grad():
        ref.table.uniform_(-1, 1)
    x = torch.rand(1 << 20, 3, device="cuda") * 2 - 1
    gout = torch.randn(1 << 20, ref.output_dim, device="cuda")
    print("| block | warps | order | forward ms (1M) | fwd+bwd ms (1M) | forward M queries/s |")
    print("|---|---|---|---|---|---|")
    sweep = []
    for block in (64, 128, 256, 512):
        for warps in (2, 4, 8):
            for level_major in (False, True):
                e = TritonHashGrid(cfg, block=block, num_warps=warps, level_major=level_major).cuda()
                e.load_state_dict(ref.state_dict())
                tf, tb = timed(lambda e=e: fwd(e, x)), timed(lambda e=e: fwdbwd(e, x, gout))
                sweep.append((tf, block, warps, level_major))
                print(f"| {block} | {warps} | {'level-major' if level_major else 'level-fastest'} | {tf:.3f} | "
                      f"{tb:.3f} | {(1 << 20) / tf / 1e3:.0f} |")
    _, block, warps, level_major = min(sweep)
    encs = {"torch": ref, "triton-default": TritonHashGrid(cfg).cuda(),
            f"triton-b{block}-w{warps}{'-lm' if level_major else ''}": TritonHashGrid(
                cfg, block=block, num_warps=warps, level_major=level_major).cuda()}
    for e in encs.values():
        e.load_state_dict(ref.state_dict())
    if tcnn_available():
        e = make_encoding(HashGridConfig(backend="tcnn")).cuda()
        e.load_state_dict(ref.state_dict())
        encs["tcnn"] = e
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
            tf, tb = timed(lambda e=e, x=x: fwd(e, x)), timed(lambda e=e, x=x, gout=gout: fwdbwd(e, x, gout))
            base = tf if name == "torch" else base
            print(f"| {name} | {n} | {tf:.3f} | {tb:.3f} | {n / tf / 1e3:.0f} | {base / tf:.1f}x |")


if __name__ == "__main__":
    main()
