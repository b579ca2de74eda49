"""The before / after figures of one ``bench/gpu_session.sh`` run, from the JSON its bench scripts wrote.

    python3 bench/gpu_figures.py LOG_DIR [--json OUT]

Reads ``LOG_DIR/<bench>_<before|after>.json`` (missing ones are left out), prints one table of the issue's goals
(before, after, goal) and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _load(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def world(d: dict | None) -> dict:
    if not d or not d.get("rows"):
        return {}
    r = d["rows"][0]
    return {"expansion_median_s": r["median_s"], "first_expansion_s": r["first_expansion_s"],
            "setup_s": r.get("setup_s", 0.0), "unet": r.get("accel"),
            **{f"{k[:-2]}_s": v for k, v in r["stages"].items()}, "refine_l1": r.get("refine_l1")}


def motion(d: dict | None) -> dict:
    if not d or not d.get("expansions"):
        return {}
    e = d["expansions"]
    return {"total_median_s": statistics.median(x["total_s"] for x in e),
            "align_median_s": statistics.median(x["align_s"] for x in e),
            "update_median_s": statistics.median(x["update_s"] for x in e),
            "first_fit_s": d.get("first_fit_s"), "held_out_angle_deg": d.get("held_out", {}).get("angle_deg"),
            "update_rel_error": statistics.median(x["update_rel_error"] for x in e)}


def hashgrid(d: dict | None) -> dict:
    if not d:
        return {}
    out = {}
    for r in d.get("rows", []):
        if r["points"] == 1 << 20:
            out[f"{r['encoding']}_1M_gqps"] = r["gqps"]
            out[f"{r['encoding']}_1M_forward_ms"] = r["forward_ms"]
            out[f"{r['encoding']}_1M_fwdbwd_ms"] = r["fwdbwd_ms"]
    if d.get("variants"):
        best = min(d["variants"], key=lambda v: v["forward_ms"])
        out["best_variant"] = best
    if d.get("floor"):
        out["floor"] = d["floor"]
    out["parity"] = d.get("parity")
    return out


def render(d: dict | None) -> dict:
    if not d:
        return {}
    out = {}
    for r in d.get("speed", []):
        key = f"{r['scene']}_sh{r['sh']}_dyn{r['dynamic'] / r['n']:.2f}"
        for k in ("frame_ms", "frame_rgba_ms", "frame_rgba_tile32_ms", "frame_rgba_auto_ms", "auto_tile",
                  "choose_tile_ms", "rasterize_ms", "gather_ms", "gsplat_rgb_ms"):
            if k in r:
                out[f"{key}_{k}"] = r[k]
    return out


def outpaint(d: dict | None) -> dict:
    if not d:
        return {}
    return {r["mode"]: {k: v for k, v in r.items() if k != "mode"} for r in d.get("rows", [])}


def collect(folder: Path) -> dict:
    figures = {}
    for name, fn in (("world_step", world), ("motion_update", motion), ("hashgrid", hashgrid), ("render", render)):
        figures[name] = {when: fn(_load(folder, f"{name}_{when}")) for when in ("before", "after")}
    figures["motion_update"]["after_100_steps"] = motion(_load(folder, "motion_update_after100"))
    figures["motion_update"]["after_50_steps"] = motion(_load(folder, "motion_update_after50"))
    figures["motion_update"]["after_t17_100_steps"] = motion(_load(folder, "motion_update_after_t17"))
    figures["outpaint_modes"] = {**outpaint(_load(folder, "outpaint_inductor")), **outpaint(_load(folder, "outpaint_after"))}
    device = next((d["device"] for name in ("world_step_after", "render_after", "hashgrid_after")
                   if (d := _load(folder, name))), None)
    figures["device"] = device
    return figures


def table(f: dict) -> str:
    def get(section, when, key):
        v = f.get(section, {}).get(when, {}).get(key)
        return f"{v:.3f}" if isinstance(v, (int, float)) else "-"

    rows = [("expansion step, median s", "world_step", "expansion_median_s", "<= 0.5"),
            ("  outpaint s", "world_step", "outpaint_s", ""), ("  refine s", "world_step", "refine_s", ""),
            ("  depth s", "world_step", "depth_s", ""), ("  lift s", "world_step", "lift_s", ""),
            ("  write s", "world_step", "write_s", ""), ("  render s", "world_step", "render_s", ""),
            ("  preview s", "world_step", "preview_s", ""), ("  refine L1 (quality)", "world_step", "refine_l1", ""),
            ("  first expansion s (load + capture)", "world_step", "first_expansion_s", ""),
            ("motion align + update, median s", "motion_update", "total_median_s", "<= 0.1"),
            ("  align s", "motion_update", "align_median_s", ""), ("  update s", "motion_update", "update_median_s", ""),
            ("  update fit rel. error", "motion_update", "update_rel_error", ""),
            ("  held-out angle error deg", "motion_update", "held_out_angle_deg", ""),
            ("hash grid 1M forward, G queries/s", "hashgrid", "triton (default)_1M_gqps", ">= 2"),
            ("ball 4D frame ms (SH 0, all dynamic)", "render", "ball_sh0_dyn1.00_frame_ms", "<= 3"),
            ("ball RGBA frame ms (SH 0, all dynamic)", "render", "ball_sh0_dyn1.00_frame_rgba_ms", "<= 3"),
            ("ball RGBA frame ms, tile from the footprints (the render job's)", "render",
             "ball_sh0_dyn1.00_frame_rgba_auto_ms", "<= 3"),
            ("  tile chosen (ball)", "render", "ball_sh0_dyn1.00_auto_tile", ""),
            ("ball 4D frame ms (SH 3, all dynamic)", "render", "ball_sh3_dyn1.00_frame_ms", "<= 3"),
            ("ball RGBA frame ms (SH 3), tile from the footprints", "render", "ball_sh3_dyn1.00_frame_rgba_auto_ms",
             "<= 3"),
            ("world 4D frame ms (SH 3, all dynamic)", "render", "world_sh3_dyn1.00_frame_ms", "keep"),
            ("world RGBA frame ms (SH 3), 16-px tiles", "render",
             "world_sh3_dyn1.00_frame_rgba_ms", "keep"),
            ("world RGBA frame ms (SH 3), tile from the footprints", "render",
             "world_sh3_dyn1.00_frame_rgba_auto_ms", "keep"),
            ("  tile chosen (world)", "render", "world_sh3_dyn1.00_auto_tile", "")]
    lines = [f"device: {f.get('device')}", "| figure | before | after | goal |", "|---|---|---|---|"]
    lines += [f"| {label} | {get(s, 'before', k)} | {get(s, 'after', k)} | {goal} |" for label, s, k, goal in rows]
    for steps, label in ((100, "100 update steps"), (50, "50 update steps"), ("t17_100", "2^17 tables, 100 steps")):
        m = f.get("motion_update", {}).get(f"after_{steps}_steps") or {}
        if m:
            lines.append(f"| motion with {label}: total / update s, fit rel. error, held-out deg | | "
                         f"{m['total_median_s']:.3f} / {m['update_median_s']:.3f}, {m['update_rel_error']:.4f}, "
                         f"{m['held_out_angle_deg']:.2f} | <= 0.1 |")
    for mode, r in f.get("outpaint_modes", {}).items():
        lines.append(f"| outpaint alone, UNet {mode}: call s (first call s) | | {r['median_s']:.3f} "
                     f"({r['first_call_s']:.1f}) | PSNR vs eager {r.get('psnr_vs_eager_db', float('inf')):.1f} dB |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    figures = collect(args.folder)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    print(table(figures))


if __name__ == "__main__":
    main()
