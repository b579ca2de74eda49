"""Hash-grid encoding on CUDA: the default Triton encoding against the torch reference (and tiny-cuda-nn when
installed), forward and forward + backward, at 256k / 1M / 4M points; then the launch settings and table
precisions side by side at 1M (what the autotuner chooses among), the same 1M points in Z-order (as the bake
queries them) with the sort's cost, and the floor the bytes set.

Default config (16 levels x 2 features, 2^19 rows, base 16, scale 1.447), uniform random points in the box; CUDA
events, median of ``--iters`` runs after warm-up. Parity: the default encoding against the reference over the
table as the kernel reads it (float16 rounding when ``table_dtype`` is float16) and against the float32 table.

    python bench/fields_hashgrid_gpu.py [--iters 20] [--json out.json] [--dry]
"""

from __future__ import annotations

import argparse
import dataclasses

from gpu_common import dump, median_ms, use_code_tree

use_code_tree()

import torch

from backend.fields import HashGridConfig, encode_reference, make_encoding, tcnn_available


def timed(enc, x, gout, iters, cuda):
    def fwd(_):
        with torch.no_grad():
            enc(x)

    def fwdbwd(_):
        enc.table.grad = None
        (enc(x) * gout).sum().backward()

    return median_ms(fwd, iters, cuda=cuda), median_ms(fwdbwd, max(iters // 2, 3), cuda=cuda)


def read_table(enc):
    """The table as the encoding reads it (float16-rounded when the Triton kernel reads float16)."""
    if getattr(enc.config, "table_dtype", "float32") == "float16" and enc.name == "triton":
        return enc.table.half().float()
    return enc.table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json", default=None)
    ap.add_argument("--dry", action="store_true", help="CPU, small sizes, torch reference only (checks the script)")
    args = ap.parse_args()
    cuda = not args.dry
    dev = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    cfg = HashGridConfig(backend="torch")
    ref = make_encoding(cfg).to(dev)
    with torch.no_grad():
        ref.table.uniform_(-1, 1)
    encs = {"torch": ref}
    if cuda:
        encs["triton (default)"] = make_encoding(dataclasses.replace(cfg, backend="triton")).cuda()
        if tcnn_available():
            encs["tcnn"] = make_encoding(dataclasses.replace(cfg, backend="tcnn")).cuda()
    for e in encs.values():
        e.load_state_dict(ref.state_dict())
    result = {"config": dataclasses.asdict(cfg), "parity": {}, "rows": [], "variants": []}
    n_check = 1 << (20 if cuda else 12)
    x = torch.rand(n_check, 3, device=dev) * 2 - 1
    g = torch.randn(n_check, ref.output_dim, device=dev)
    (g_ref,) = torch.autograd.grad((encode_reference(ref.normalize(x), ref.table, ref.layout) * g).sum(), ref.table)
    for name, e in encs.items():
        out = e(x)
        (g_e,) = torch.autograd.grad((out * g).sum(), e.table)
        with torch.no_grad():
            out = out.detach()
            want = encode_reference(e.normalize(x), read_table(e), e.layout)
            full = encode_reference(e.normalize(x), e.table, e.layout)
        row = {"max_abs_vs_read_table": float((out - want).abs().max()),
               "max_abs_vs_float32": float((out - full).abs().max()),
               "rel_l2_vs_float32": float((out - full).norm() / full.norm()),
               "grad_max_abs": float((g_e - g_ref).abs().max())}
        if hasattr(e, "launch_settings"):
            row["launch (block, warps, order)"] = e.launch_settings(n_check)
        result["parity"][name] = row
        print(f"check {name}: " + ", ".join(f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in row.items()))
    print("\n| encoding | points | forward ms | fwd+bwd ms | forward G queries/s | speed-up fwd vs torch |")
    print("|---|---|---|---|---|---|")
    for n in ((1 << 18, 1 << 20, 1 << 22) if cuda else (1 << 12,)):
        x = torch.rand(n, 3, device=dev) * 2 - 1
        base = None
        for name, e in encs.items():
            if name == "torch" and n != (1 << 20) and cuda:
                continue  # the reference once, at 1M
            gout = torch.randn(n, e.output_dim, device=dev)
            tf, tb = timed(e, x, gout, args.iters, cuda)
            base = tf if name == "torch" else base
            result["rows"].append({"encoding": name, "points": n, "forward_ms": tf, "fwdbwd_ms": tb,
                                   "gqps": n / tf / 1e6})
            speed = f"{base / tf:.1f}x" if base else "-"
            print(f"| {name} | {n} | {tf:.3f} | {tb:.3f} | {n / tf / 1e6:.2f} | {speed} |")
    if cuda:
        variants(cfg, ref, args.iters, result)
    dump(args.json, {"bench": "fields_hashgrid_gpu", **result})


def variants(cfg, ref, iters, result) -> None:
    """Every setting the autotuner tries, for both table precisions, at 1M points; and the byte floor."""
    try:
        from backend.fields.hashgrid_triton import TUNED, TritonHashGrid
    except ImportError:  # the code before the autotuned kernel
        return
    n = 1 << 20
    x = torch.rand(n, 3, device="cuda") * 2 - 1
    gout = torch.randn(n, ref.output_dim, device="cuda")
    print("\n| table | block | warps | order | forward ms (1M) | fwd+bwd ms | G queries/s |")
    print("|---|---|---|---|---|---|---|")
    # besides the autotuner's settings, level-group programs of other sizes (level-major ones of 2-8 points per
    # thread were within 5 % of the tuned ones, docs/bench/motion.md)
    extra = [(128, 4, 3), (256, 8, 3), (128, 4, 1)]
    names = {1: "level-major", 2: "point-major", 3: "level groups"}
    for table_dtype in ("float16", "float32"):
        for block, warps, order in TUNED + (extra if table_dtype == "float16" else []):
            e = TritonHashGrid(dataclasses.replace(cfg, backend="triton", table_dtype=table_dtype), block, warps,
                               order).cuda()
            e.load_state_dict(ref.state_dict())
            tf, tb = timed(e, x, gout, iters, True)
            result["variants"].append({"table": table_dtype, "block": block, "warps": warps, "order": order,
                                       "forward_ms": tf, "fwdbwd_ms": tb})
            print(f"| {table_dtype} | {block} | {warps} | {names[order]} | "
                  f"{tf:.3f} | {tb:.3f} | {n / tf / 1e6:.2f} |")
    # the same 1M points in Z-order (as the bake integrates them: backend.fields.morton_order, sorted once)
    from backend.fields import morton_order

    enc = make_encoding(dataclasses.replace(cfg, backend="triton")).cuda()
    enc.load_state_dict(ref.state_dict())
    sort_ms = median_ms(lambda _: morton_order(x), iters)
    xs = x[morton_order(x)].contiguous()
    tf, tb = timed(enc, xs, gout, iters, True)
    result["z_order"] = {"points": n, "forward_ms": tf, "fwdbwd_ms": tb, "gqps": n / tf / 1e6, "sort_ms": sort_ms,
                         "gqps_with_sort": n / (tf + sort_ms) / 1e6}
    print(f"\nZ-ordered 1M points (default encoding): forward {tf:.3f} ms = {n / tf / 1e6:.2f} G queries/s, fwd+bwd "
          f"{tb:.3f} ms; the sort itself {sort_ms:.3f} ms (once per bake), {n / (tf + sort_ms) / 1e6:.2f} G/s with it")
    # the floor: positions read once (12 B) and features written once (L F 4 B) per point; the table's gathers
    # (8 corners x L levels) come from L2 once it holds the table
    out_bytes = n * (12 + ref.output_dim * 4)
    copy = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")
    copy_ms = median_ms(lambda _: copy.clone(), 10)
    bandwidth = 2 * copy.numel() / copy_ms / 1e9  # TB/s, bytes read + written
    gathers = n * cfg.n_levels * 8
    best = min(v["forward_ms"] for v in result["variants"])
    result["floor"] = {"bytes": out_bytes, "copy_TBps": bandwidth, "floor_ms": out_bytes / bandwidth / 1e9,
                       "best_forward_ms": best, "gathers_per_s": gathers / best / 1e-3}
    print(f"\nfloor: {out_bytes / 1e6:.0f} MB of positions + features at {bandwidth:.2f} TB/s (device copy) = "
          f"{out_bytes / bandwidth / 1e9:.3f} ms; best forward {best:.3f} ms = {gathers / best / 1e6:.0f} G corner "
          "gathers/s")


if __name__ == "__main__":
    main()
