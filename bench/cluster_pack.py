"""Pack what bench/cluster_local.py needs on the device machine into a git-ignored folder that a `run` call carries.

    .venv/bin/python bench/cluster_pack.py --ray-wheel ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl \
        --wheels .whl/gsplat-*.whl .whl/pydantic*.whl ... --dataset N3V_DIR --out .cluster_carry

Writes into ``--out``:
- ``site.tar.xz``: the wheels unpacked as ``pip install --target`` would lay them out, Ray without the parts a
  one-machine cluster of Python tasks never loads (Java workers ``ray/jars``, the dashboard's web client, RLlib,
  Data, Serve, Tune, Train, LLM), so that it fits the 64 MiB a call may carry (the wheel is 79 MB). Unpack it on
  the device with ``tar -xJf site.tar.xz -C /tmp/site`` (tar keeps the executable bits of ``gcs_server`` and
  ``raylet``) and put ``/tmp/site`` first on ``PYTHONPATH``.
- ``scene/``: the N3V dataset rewritten in the Technicolor layout (``Scene_undist_FFFFF_CC.png`` +
  ``cameras_parameters.txt``), because the device image has no ffmpeg to decode the videos (imageio-ffmpeg's
  binary is 173 MB) but has OpenCV to read PNGs. The images are the decoded video frames, losslessly; the
  cameras are the same (checked here against ``load_dataset`` of the N3V folder: pixels equal, intrinsics and
  poses to 1e-6, the same held-out camera). What differs is the Technicolor loader's fixed depth bounds
  (0.01-100 m instead of the poses' 1st/99th percentiles), which the plane-sweep initial cloud reads: with them
  it puts every point a centimetre in front of a camera, where nothing is visible. Hence also
- ``scene_points.npz``: the initial cloud of ``--points`` points swept on the N3V folder (its real bounds), for
  ``bench/cluster_local.py --init-points``, which puts it in every run folder (``prepare_run`` keeps it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RAY_DROP = ("ray/jars/", "ray/dashboard/client/", "ray/rllib/", "ray/data/", "ray/serve/", "ray/tune/",
            "ray/train/", "ray/llm/")


def unpack_wheels(ray_wheel: Path, wheels: list[Path], site: Path) -> None:
    """Unpack every wheel into ``site`` (pure zip members; the executable bits from each member's mode)."""
    for whl in [ray_wheel, *wheels]:
        with zipfile.ZipFile(whl) as z:
            for info in z.infolist():
                if whl == ray_wheel and info.filename.startswith(RAY_DROP):
                    continue
                path = Path(z.extract(info, site))
                mode = (info.external_attr >> 16) & 0o777
                if mode & 0o111:
                    path.chmod(mode)


def to_technicolor(n3v: Path, out: Path, points: int, jpeg: int = 0) -> None:
    """Write the N3V folder ``n3v`` as a Technicolor folder ``out`` and check both load to the same video; write
    the N3V folder's initial cloud of ``points`` points beside ``out``."""
    import cv2

    from backend.moe.data import load_dataset
    from backend.moe.points import init_points

    video = load_dataset(n3v)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    lines = ["f cx cy ar skew qw qx qy qz tx ty tz"]
    for c, cam in enumerate(video.cameras):
        K, w2c = np.asarray(cam.K, float), np.asarray(cam.world_to_cam, float)
        if abs(K[0, 0] - K[1, 1]) > 1e-9:
            raise SystemExit("the Technicolor layout has one focal length; this camera has fx != fy")
        q = rotmat_to_quat_wxyz(w2c[:3, :3])
        lines.append(" ".join(f"{v:.12g}" for v in [K[0, 0], K[0, 2], K[1, 2], 1.0, 0.0, *q, *w2c[:3, 3]]))
        for f in range(video.num_frames):
            if jpeg:
                cv2.imwrite(str(out / f"Scene_undist_{f:05d}_{c:02d}.jpg"), video.images[c, f][..., ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, jpeg])
            else:
                cv2.imwrite(str(out / f"Scene_undist_{f:05d}_{c:02d}.png"), video.images[c, f][..., ::-1])
    (out / "cameras_parameters.txt").write_text("\n".join(lines) + "\n")
    pts, cols, method = init_points(video, "sweep", points, points, seed=0)
    np.savez(out.parent / "scene_points.npz", points=pts, colors=cols, method=method)
    back = load_dataset(out)
    if jpeg:  # lossy: report how far the stored frames are from the decoded video
        mse = np.mean((back.images.astype(np.float64) - video.images) ** 2)
        print(f"JPEG quality {jpeg}: PSNR {10 * np.log10(255.0 ** 2 / max(mse, 1e-12)):.1f} dB against the video")
    else:
        assert np.array_equal(back.images, video.images), "pixels differ"
    for a, b in zip(video.cameras, back.cameras):
        assert np.allclose(a.K, b.K, atol=1e-6) and np.allclose(a.world_to_cam, b.world_to_cam, atol=1e-6)
    assert back.test == video.test and back.train == video.train, (back.test, video.test)


def rotmat_to_quat_wxyz(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix (Shepperd's method, the largest diagonal term first)."""
    t = np.trace(r)
    if t > 0:
        s = 2.0 * np.sqrt(1.0 + t)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0] * 4
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ray-wheel", type=Path, help="Ray's cp312 manylinux wheel")
    ap.add_argument("--wheels", type=Path, nargs="*", default=[], help="more wheels to unpack beside it")
    ap.add_argument("--dataset", type=Path, help="N3V folder to rewrite as out/scene (Technicolor layout)")
    ap.add_argument("--points", type=int, default=5000, help="points of the initial cloud (scene_points.npz)")
    ap.add_argument("--out", type=Path, default=Path(".cluster_carry"))
    ap.add_argument("--no-site", action="store_true", help="only the dataset")
    ap.add_argument("--jpeg", type=int, default=0, help="write the frames as JPEG of this quality (1-100) instead of "
                    "PNG: large frames fit a call's 64 MiB (0: PNG, lossless)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.no_site:
        with tempfile.TemporaryDirectory() as tmp:
            site = Path(tmp) / "site"
            unpack_wheels(a.ray_wheel, a.wheels, site)
            subprocess.run(["tar", "-cJf", str((a.out / "site.tar.xz").resolve()), "-C", str(site), "."],
                           check=True, env={"XZ_OPT": "-9 -T2", "PATH": "/usr/bin:/bin"})
        print(f"{a.out / 'site.tar.xz'}: {(a.out / 'site.tar.xz').stat().st_size / 2**20:.1f} MiB")
    if a.dataset:
        to_technicolor(a.dataset, a.out / "scene", a.points, a.jpeg)
        size = sum(p.stat().st_size for p in (a.out / "scene").iterdir())
        print(f"{a.out / 'scene'}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
