"""``lw doctor``: which renderer, hash grid and depth / segmentation / inpainting providers this machine runs, and why.

Nothing is downloaded and, unless asked, nothing heavy is loaded: the providers are named by the same rules
``backend.models.config`` builds them with (``describe``), gsplat's kernels are only checked when a build is
already cached (``--build`` builds them now, which the first CUDA render would otherwise do), and ``--load``
really builds the three providers (minutes for the real models) to prove the answer.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

CUDA_TORCH_HINT = ("install a CUDA build of torch 2.13.0 (`pip install torch==2.13.0` on Linux x86-64, or the wheel "
                   "for your CUDA from https://download.pytorch.org/whl/), then `make gpu`")


def gsplat_build_folder() -> Path:
    """Where torch's JIT keeps gsplat's compiled kernels ($TORCH_EXTENSIONS_DIR/<python+torch tag>/gsplat_cuda)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory("gsplat_cuda", verbose=False))


def renderer(build: bool) -> dict:
    """{"provider", "reason"} for ``rasterize(backend="auto")`` on this machine's default device."""
    import torch

    from .render import gsplat_backend

    if not torch.cuda.is_available():
        why = ("torch has no CUDA build" if torch.version.cuda is None else "no CUDA device is visible")
        return {"provider": "reference (torch, CPU)", "reason": f"{why}; for gsplat on an NVIDIA GPU: {CUDA_TORCH_HINT}"}
    if importlib.util.find_spec("gsplat") is None:
        return {"provider": "reference (torch, CUDA)", "reason": f"gsplat is not installed; {gsplat_backend.INSTALL_HINT}"}
    folder = gsplat_build_folder()
    prebuilt = _prebuilt_gsplat()
    built = prebuilt or (folder / "gsplat_cuda.so").exists()
    if not built and not build:
        return {"provider": "gsplat (kernels not built yet)",
                "reason": f"the first CUDA render builds them into {folder} (about 1.5 min on 16 cores; set "
                          "TORCH_CUDA_ARCH_LIST to your card, e.g. 9.0 for an H100, to build for it alone), or run "
                          "`lw doctor --build` now"}
    start = time.perf_counter()
    ok, why = gsplat_backend.status()
    took = time.perf_counter() - start
    where = "the gsplat wheel (prebuilt)" if prebuilt else folder
    note = f"; built in {took:.0f} s into {folder}" if not built and ok else f"; kernels in {where}" if ok else ""
    return {"provider": "gsplat" if ok else "reference (torch, CUDA)", "reason": why + note}


def _prebuilt_gsplat() -> bool:
    """True when gsplat came as a wheel with compiled kernels (the module ``gsplat.csrc``, which gsplat loads
    before any JIT build)."""
    try:
        return importlib.util.find_spec("gsplat.csrc") is not None
    except Exception:  # noqa: BLE001 (finding a submodule imports gsplat itself: any failure there means "no")
        return False


def hash_grid() -> dict:
    """{"provider", "reason"} for ``make_encoding(HashGridConfig())`` (backend "auto")."""
    import torch

    from .fields import tcnn_available, triton_available

    if tcnn_available():
        return {"provider": "tcnn", "reason": "tiny-cuda-nn's torch bindings import and CUDA is present"}
    if triton_available():
        return {"provider": "triton", "reason": "CUDA and Triton are present (tiny-cuda-nn is optional, not installed)"}
    why = "no CUDA device" if not torch.cuda.is_available() else "the triton package is missing"
    return {"provider": "torch", "reason": f"{why}: the torch reference runs (~20x slower than the Triton kernel)"}


def providers(models, load: bool) -> dict:
    """Per role {"provider", "reason", "device"} (+ "precision"); with ``load`` the providers are built too."""
    import torch

    from .models.config import describe, make_depth, make_outpaint, make_segmentation
    from .models.hub import torch_device

    device = torch_device(models.device)
    cuda = device.startswith("cuda")
    out = {}
    for role, (name, reason) in describe(models).items():
        row = {"provider": name, "reason": reason, "device": device}
        if not name.startswith(("builtin", "heuristic")):
            row["precision"] = {"depth": "float16" if cuda else "float32", "segmentation": "float32",
                                "outpaint": (f"float16, UNet {_accel(models.outpaint_accel, cuda)}" if cuda
                                             else "float32, eager")}[role]
        out[role] = row
    if load:
        for role, make in (("segmentation", make_segmentation), ("depth", make_depth), ("outpaint", make_outpaint)):
            start = time.perf_counter()
            built = make(models)
            out[role]["loaded"] = f"{built.name} in {time.perf_counter() - start:.1f} s"
            del built
        if cuda:
            torch.cuda.empty_cache()
    return out


def _accel(setting: str, cuda: bool) -> str:
    mode = setting if cuda or setting == "off" else "off"
    return {"auto": "replayed from CUDA graphs at once, then torch.compile'd in the background (a minute or two "
                    "after the first expansion) and replayed from CUDA graphs",
            "graphs": "replayed from CUDA graphs", "inductor": "torch.compile'd with CUDA graphs (compiles on first "
            "use)", "off": "eager"}.get(mode, mode)


def report(models, build: bool = False, load: bool = False) -> dict:
    import torch

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda or "none (CPU build)"}
    if torch.cuda.is_available():
        env["gpus"] = [f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))}, "
                       f"{torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
                       for i in range(torch.cuda.device_count())]
    for pkg in ("gsplat", "triton", "diffusers", "transformers", "tinycudann"):
        env[pkg] = _version(pkg)
    return {"environment": env, "renderer": renderer(build), "hash_grid": hash_grid(),
            "providers": providers(models, load)}


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    if importlib.util.find_spec(pkg) is None:
        return "not installed"
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "installed"


def format_report(rep: dict) -> str:
    env = rep["environment"]
    lines = [f"python {env['python']} on {env['platform']}",
             f"torch {env['torch']} (CUDA {env['torch_cuda']})" + (f"; GPUs: {', '.join(env['gpus'])}" if env.get("gpus")
                                                                   else "; no CUDA device"),
             "packages: " + ", ".join(f"{k} {env[k]}" for k in ("gsplat", "triton", "diffusers", "transformers",
                                                                  "tinycudann")),
             "",
             f"renderer:      {rep['renderer']['provider']} -- {rep['renderer']['reason']}",
             f"hash grid:     {rep['hash_grid']['provider']} -- {rep['hash_grid']['reason']}"]
    for role, row in rep["providers"].items():
        extra = f" [{row['device']}" + (f", {row['precision']}]" if "precision" in row else "]")
        lines.append(f"{role + ':':<14} {row['provider']}{extra} -- {row['reason']}")
        if "loaded" in row:
            lines.append(f"{'':<14} loaded: {row['loaded']}")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print what runs on this machine and why (see the module docstring)."""
    from .models.config import ModelConfig

    models = ModelConfig(depth=args.depth, segmentation=args.segmentation, outpaint=args.outpaint, device=args.device,
                         outpaint_accel=args.outpaint_accel)
    rep = report(models, build=args.build, load=args.load)
    print(json.dumps(rep, indent=1) if args.json else format_report(rep))
    return 1 if args.build and rep["renderer"]["provider"] != "gsplat" and rep["environment"].get("gpus") else 0


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="which renderer, hash grid and model providers run here, and why",
                       description=__doc__.splitlines()[0])
    p.add_argument("--build", action="store_true",
                   help="build gsplat's CUDA kernels now if they are not built yet (what the first render would do)")
    p.add_argument("--load", action="store_true", help="also build the three model providers (loads the models)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    for role in ("depth", "segmentation", "outpaint"):
        p.add_argument(f"--{role}", default="auto", metavar="auto|builtin|REPO_OR_FOLDER",
                       help=f"the {role} setting to check (default auto)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--outpaint-accel", default="auto", choices=["auto", "off", "graphs", "inductor"],
                   help="how the inpainting UNet runs on CUDA (default auto: CUDA graphs)")
    p.set_defaults(func=cmd_doctor)
