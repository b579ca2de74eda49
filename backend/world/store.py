"""A world on disk (``worlds/<id>/``) as a sequence of versions, written atomically.

Layout::

    world.json                       the only source of truth: settings + the list of steps (versions)
    steps/<NNNN>-<token>/            one folder per step, never modified once committed
        image.png                    the view of this step (input image / outpainted view), RGB 8-bit
        mask.png                     where this step added content (255) in that view
        depth.npy                    (H, W) float32 metres along the camera z axis of that view
        regions.png                  0 ground, 1 sky, 2 water per pixel of that view (uint8)
        gaussians.ply                ALL Gaussians of the world after this step (INRIA 3DGS PLY + region, step)
        preview.png                  the world rendered from this step's camera

Commit protocol (``commit_step``): the step's files are written into ``steps/.tmp-*/``, each file and the folder
are fsync'ed, the folder is renamed to its final name, then ``world.json`` is written to a temporary file,
fsync'ed and moved over the old one with ``os.replace``. A crash before that last rename leaves the previous
``world.json`` (and so the previous version) untouched; the orphan folder is removed by the next commit.
``undo`` rewrites ``world.json`` without the last step (same protocol) and then deletes that step's folder.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput, NotFound
from ..io.outputs import OutputKind, check_output, remove_empty_folders
from ..render.cameras import Camera

WORLD_FORMAT = "lw-world"
WORLD_VERSION = 1
STEP_FILES = ("image.png", "mask.png", "depth.npy", "regions.png", "gaussians.ply", "preview.png")
# where a new world may be created: a new or empty folder, never over an existing world or anything else
WORLD_FOLDER = OutputKind("a world", lambda path: Path(path, "world.json").is_file(), replaceable=False)


def camera_to_json(camera: Camera, blender: dict | None = None) -> dict:
    """Camera record of world.json: OpenCV intrinsics/extrinsics and the Blender camera spec it came from."""
    return {"K": np.asarray(camera.K, float).tolist(), "world_to_cam": np.asarray(camera.world_to_cam, float).tolist(),
            "width": int(camera.width), "height": int(camera.height), "near": float(camera.near),
            "far": float(camera.far), "blender": blender}


def camera_from_json(d: dict) -> Camera:
    return Camera(K=np.array(d["K"], float), world_to_cam=np.array(d["world_to_cam"], float), width=int(d["width"]),
                  height=int(d["height"]), near=float(d["near"]), far=float(d["far"]))


@dataclass(frozen=True)
class WorldStep:
    """One version of the world. ``folder`` is relative to the world root; file names are inside it."""

    index: int
    kind: str  # "new" | "expand"
    folder: str
    camera: dict  # camera_to_json record
    prompt: str = ""
    providers: dict = field(default_factory=dict)  # role -> provider name actually used
    stats: dict = field(default_factory=dict)  # counts, depth-fit residual, per-stage seconds
    image: str = "image.png"
    mask: str = "mask.png"
    depth: str = "depth.npy"
    regions: str = "regions.png"
    gaussians: str = "gaussians.ply"
    preview: str = "preview.png"

    def path(self, root: Path, name: str) -> Path:
        return Path(root) / self.folder / name

    def opencv_camera(self) -> Camera:
        return camera_from_json(self.camera)


@dataclass(frozen=True)
class World:
    """A world as read from ``world.json``: ``settings`` are the pipeline settings fixed at creation."""

    root: Path
    id: str
    settings: dict
    steps: tuple[WorldStep, ...]

    @property
    def current(self) -> WorldStep:
        return self.steps[-1]

    def file(self, name: str, step: WorldStep | None = None) -> Path:
        """Path of a file of ``step`` (default: the current step), e.g. ``world.file("gaussians.ply")``."""
        return (step or self.current).path(self.root, name)

    def to_json(self) -> dict:
        return {"format": WORLD_FORMAT, "version": WORLD_VERSION, "id": self.id, "settings": self.settings,
                "current": len(self.steps) - 1, "steps": [asdict(s) for s in self.steps]}


def load_world(root: str | os.PathLike) -> World:
    """Read ``<root>/world.json``. Raises ``NotFound`` / ``InvalidInput`` with what is wrong."""
    root = Path(root)
    path = root / "world.json"
    if not path.is_file():
        raise NotFound(f"{str(root)!r} is not a world folder (no world.json); create one with `lw world new IMAGE`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path} is not valid JSON: {exc}") from exc
    if data.get("format") != WORLD_FORMAT or data.get("version") != WORLD_VERSION:
        raise InvalidInput(f"{path}: not a {WORLD_FORMAT} v{WORLD_VERSION} file")
    steps = tuple(WorldStep(**s) for s in data["steps"])
    if not steps:
        raise InvalidInput(f"{path} lists no steps")
    for s in steps:
        if not (root / s.folder).is_dir():
            raise InvalidInput(f"{path} names the step folder {s.folder!r}, which is missing")
    return World(root=root, id=str(data["id"]), settings=dict(data["settings"]), steps=steps)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_all(paths: list[Path]) -> None:
    """``_fsync_path`` of each path, concurrently: the file system joins the flushes into fewer journal commits
    (a step's 7 files: 36-42 ms one after another, 14-21 ms together on this project's test box). Returns when
    every one is on disk; the first error is raised."""
    if len(paths) < 2:
        for p in paths:
            _fsync_path(p)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(paths)), thread_name_prefix="lw-fsync") as pool:
        for future in [pool.submit(_fsync_path, p) for p in paths]:
            future.result()


def _write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_path(path.parent)


def _remove_orphans(root: Path, keep: set[str]) -> None:
    """Delete step folders world.json does not name (left by a crash or an undo)."""
    steps_dir = root / "steps"
    if steps_dir.is_dir():
        for p in steps_dir.iterdir():
            if p.is_dir() and f"steps/{p.name}" not in keep:
                shutil.rmtree(p, ignore_errors=True)


def stage_step(world: World) -> Path:
    """A new temporary folder (``steps/.tmp-*``) of an existing world, to write a step's files into while the step
    is still being made; ``commit_step(..., staged=)`` then makes it the step. A step that is not committed must
    be removed with ``discard_staged``; a crash leaves it to the next commit's clean-up (``_remove_orphans``),
    like a crash inside ``commit_step``."""
    (world.root / "steps").mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(dir=world.root / "steps", prefix=".tmp-"))


def discard_staged(staged: Path) -> None:
    """Remove a ``stage_step`` folder and everything in it (what a failed step wrote)."""
    shutil.rmtree(staged, ignore_errors=True)


def commit_step(root: str | os.PathLike, world: World | None, step: WorldStep,
                write_files: Callable[[Path], dict[str, Any]], world_id: str | None = None,
                settings: dict | None = None, staged: Path | None = None) -> World:
    """Write a new step and make it the current version.

    ``write_files(folder)`` writes the step's files into the (temporary) folder and may return extra stats to
    merge into ``step.stats``. ``world`` is the current world (None for the first step, then ``world_id`` and
    ``settings`` are required). ``staged``: that folder made ahead by ``stage_step(world)``, files already in it.
    Anything raised leaves the previous version as it was, and no temporary folder of this call's making; a
    staged folder is left to its maker, who may still be writing into it (``discard_staged``).
    """
    root = Path(root)
    if staged is not None and (world is None or staged.parent != world.root / "steps"):
        raise ValueError("a staged step folder belongs to an existing world's steps/ folder")
    if world is None:
        check_output(root, WORLD_FOLDER)
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    (root / "steps").mkdir(exist_ok=True)
    if world is not None:
        _remove_orphans(root, {s.folder for s in world.steps} | ({f"steps/{staged.name}"} if staged else set()))
    try:
        tmp = staged if staged is not None else Path(tempfile.mkdtemp(dir=root / "steps", prefix=".tmp-"))
        try:
            extra_stats = write_files(tmp) or {}
            _fsync_all([*tmp.iterdir(), tmp])
            final = root / step.folder
            os.rename(tmp, final)
            _fsync_path(final.parent)
        except BaseException:
            if staged is None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
    except BaseException:
        if created:  # a first step that failed (disk full): no empty world folder is left behind
            remove_empty_folders(root)
        raise
    step = WorldStep(**{**asdict(step), "stats": {**step.stats, **extra_stats}})
    if world is None:
        new = World(root=root, id=str(world_id), settings=dict(settings or {}), steps=(step,))
    else:
        new = World(root=world.root, id=world.id, settings=world.settings, steps=world.steps + (step,))
    _write_json_atomic(root / "world.json", new.to_json())
    return new


def new_step_folder(index: int) -> str:
    """A fresh, unique folder name for step ``index`` (unique so an undone step never collides with a new one)."""
    return f"steps/{index:04d}-{secrets.token_hex(4)}"


def undo(root: str | os.PathLike) -> World:
    """Make the previous step the current version and delete the last step's folder."""
    world = load_world(root)
    if len(world.steps) < 2:
        raise InvalidInput("nothing to undo: the world has only its first step (delete the folder to start over)")
    prev = World(root=world.root, id=world.id, settings=world.settings, steps=world.steps[:-1])
    _write_json_atomic(world.root / "world.json", prev.to_json())
    _remove_orphans(world.root, {s.folder for s in prev.steps})
    return prev
