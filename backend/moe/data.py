"""Multi-view video datasets: the N3V and Technicolor layouts as published, read into ``MultiViewVideo``.

Coordinate frames, stated once:

- ``Camera.world_to_cam`` is OpenCV (x right, y down, z forward), as everywhere in the backend.
- The world frame is the dataset's own: the frame its poses are given in. For the Blender-made synthetic
  dataset (``scripts/make_synthetic_dataset.py``) that is Blender Z-up metres; for real N3V / Technicolor
  captures it is their COLMAP reconstruction's frame (arbitrary up axis and scale). Nothing is re-oriented,
  so a trained model's Gaussians live in the frame of the dataset's cameras.

N3V (Li et al., "Neural 3D Video"): ``poses_bounds.npy`` (N, 17) and ``camNN.mp4``. Row i is camera i in the
sorted order of the videos: a 3x5 matrix flattened row-major, ``[R | t | hwf]``, then near and far bounds.
``R``'s columns are the camera's axes in the world in the LLFF order (down, right, back), ``t`` its centre and
``hwf`` = (height, width, focal) in pixels of the frames the poses were computed at. The OpenCV
camera-to-world rotation is therefore ``[R[:, 1], R[:, 0], -R[:, 2]]`` (right, down, forward = -back), and
``world_to_cam = inverse([[R_cv, t], [0, 1]])``. The principal point is the image centre (as STG's
preprocessing writes it). ``cam00`` is the held-out test camera, as in the field.

Technicolor (Sabater et al.), the layout STG's ``pre_technicolor.py`` reads: undistorted frames
``<Scene>_undist_<FFFFF>_<CC>.png`` (frame number, camera index) and ``cameras_parameters.txt``: one header line,
then per camera ``f cx cy ar skew qw qx qy qz tx ty tz`` where (q, t) is COLMAP's world-to-camera rotation
(quaternion w, x, y, z) and translation, i.e. already OpenCV; STG uses fx = fy = f and ignores ar and skew, and
so do we. STG trains on 50-frame clips: Birthday 151-200, Fabien 51-100, Painter 100-149, Theater 51-100,
Train 151-200 (``TECHNICOLOR_CLIPS``; used when the folder is named after the scene and no range is given).
The held-out camera is the rig's centre: the camera whose centre is nearest the mean of all centres.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from ..io.arrays import load_array
from ..io.images import check_image_header
from ..render.cameras import Camera

TECHNICOLOR_CLIPS = {"Birthday": (151, 201), "Fabien": (51, 101), "Painter": (100, 150), "Theater": (51, 101),
                     "Train": (151, 201)}
_TECHNI_RE = re.compile(r"^(?P<scene>.+)_undist_(?P<frame>\d{5})_(?P<cam>\d{2})\.(?:png|jpe?g)$", re.IGNORECASE)


@dataclass
class MultiViewVideo:
    """Synchronised videos from calibrated cameras.

    cameras: one ``Camera`` per view (OpenCV, at the loaded resolution) · names: "cam00", ... ·
    images: (C, T, H, W, 3) uint8 · times: (T,) float in [0, 1], t_f = f / (T - 1) · fps ·
    train / test: camera indices · bounds: (C, 2) near/far of each camera (dataset units) ·
    frame_numbers: (T,) the source frame index of each loaded frame · source: the folder it came from.
    """

    cameras: list[Camera]
    names: list[str]
    images: np.ndarray
    times: np.ndarray
    fps: float
    train: list[int]
    test: list[int]
    bounds: np.ndarray
    frame_numbers: np.ndarray
    source: str = ""
    extras: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every frame."""
        return int(self.images.shape[3]), int(self.images.shape[2])

    def frame(self, cam: int, t: int) -> np.ndarray:
        """Frame ``t`` of camera ``cam`` as float32 (H, W, 3) in [0, 1]."""
        return self.images[cam, t].astype(np.float32) / 255.0

    def scene_extent(self) -> float:
        """Radius of the camera centres around their mean (3DGS's "cameras extent", x1.1)."""
        c = np.stack([cam.center for cam in self.cameras])
        return float(1.1 * np.linalg.norm(c - c.mean(0), axis=1).max())


def llff_to_world_to_cam(pose: np.ndarray) -> np.ndarray:
    """(3, 5) LLFF pose [R (down, right, back) | centre | hwf] -> (4, 4) OpenCV world_to_cam."""
    r = pose[:, :3]
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([r[:, 1], r[:, 0], -r[:, 2]], axis=1)
    c2w[:3, 3] = pose[:, 3]
    return np.linalg.inv(c2w)


def _scaled_camera(K: np.ndarray, w2c: np.ndarray, src_wh: tuple[int, int], dst_wh: tuple[int, int],
                   near: float = 0.01, far: float = 1.0e4) -> Camera:
    sx, sy = dst_wh[0] / src_wh[0], dst_wh[1] / src_wh[1]
    K = np.diag([sx, sy, 1.0]) @ K
    return Camera(K=K, world_to_cam=w2c, width=int(dst_wh[0]), height=int(dst_wh[1]), near=near, far=far)


def _target_size(w: int, h: int, downsample: float) -> tuple[int, int]:
    if downsample < 1:
        raise InvalidInput(f"downsample must be >= 1, got {downsample}")
    return max(1, round(w / downsample)), max(1, round(h / downsample))


def check_frame_range(frames: tuple[int, int | None] | None) -> None:
    """Refuse a frame range that is not [start, end) with 0 <= start < end (end None: to the end)."""
    if frames is not None and not (0 <= frames[0] and (frames[1] is None or frames[0] < frames[1])):
        raise InvalidInput(f"frames must be [start, end) with 0 <= start < end, got {list(frames)}")


MEMORY_SHARE = 0.8  # the decoded frames may take this share of the memory free when the dataset is read


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (psutil), None where psutil is missing."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def check_decoded_size(folder: Path, cameras: int, frames: int, wh: tuple[int, int], downsample: float) -> None:
    """Refuse, before decoding, a dataset whose frames (uint8, all cameras, every frame of the range) would not fit
    in ``MEMORY_SHARE`` of the free memory; the message says which frame range or downsample would."""
    need = cameras * frames * wh[0] * wh[1] * 3
    free = available_memory()
    if free is None or need <= MEMORY_SHARE * free:
        return
    fit = int(MEMORY_SHARE * free // max(cameras * wh[0] * wh[1] * 3, 1))
    scale = float(np.ceil(downsample * np.sqrt(need / (MEMORY_SHARE * free)) * 10) / 10)
    raise InvalidInput(f"{folder.name}: {cameras} cameras x {frames} frames at {wh[0]}x{wh[1]} decode to "
                       f"{need / 1e9:.1f} GB, more than the {free / 1e9:.1f} GB of free memory allows: train on a "
                       f"frame range of at most {fit} frames (STG trains N3V in 50-frame segments) or with "
                       f"downsample {scale:g} or more")


def ffmpeg_reason(exc: BaseException) -> str:
    """The line of an ffmpeg error that says what is wrong (its last one, without the ``[in#0 @ 0x...]`` tag),
    not the 2-3 kB version banner imageio-ffmpeg puts before it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    last = re.sub(r"^\[[^\]]*\]\s*", "", lines[-1]) if lines else type(exc).__name__
    return last[:200]


def _open_video(path: Path):
    """An imageio ffmpeg reader of ``path``; a missing, empty or undecodable file is a one-line ``InvalidInput``."""
    import imageio.v2 as iio

    try:
        size = path.stat().st_size
    except OSError as exc:  # missing (a dangling link, removed meanwhile), unreadable folder
        raise InvalidInput(f"cannot read video {path}: {exc.strerror or exc}; check that the file exists and is "
                           "readable") from None
    if size == 0:
        raise InvalidInput(f"cannot read video {path}: the file is empty (0 bytes)")
    try:
        return iio.get_reader(str(path), "ffmpeg")
    except Exception as exc:  # noqa: BLE001 (imageio raises OSError, RuntimeError, ValueError for bad files)
        raise InvalidInput(f"cannot read video {path}: {ffmpeg_reason(exc)}") from None


def _video_header(path: Path) -> tuple[int, tuple[int, int], float]:
    """(frame count, (width, height), fps) of a video from its header, without decoding it."""
    with _open_video(path) as r:
        meta = r.get_meta_data()
    fps = float(meta.get("fps") or 30.0)
    size = tuple(int(v) for v in meta.get("size") or (0, 0))
    if min(size) < 1 or not np.isfinite(fps) or fps <= 0:
        raise InvalidInput(f"cannot read video {path}: its header gives size {size} and fps {fps}")
    n = meta.get("nframes", float("inf"))
    if not np.isfinite(n):
        n = round(float(meta.get("duration") or 0.0) * fps)
    return int(n), size, fps


def _resize(img: np.ndarray, wh: tuple[int, int]) -> np.ndarray:
    import cv2

    if (img.shape[1], img.shape[0]) == wh:
        return img
    return cv2.resize(img, wh, interpolation=cv2.INTER_AREA)


def _read_video(path: Path, start: int, end: int | None, wh_of) -> np.ndarray:
    """Frames [start, end) of ``path`` as (T, h, w, 3) uint8 resized by ``wh_of(w, h)``."""
    reader = _open_video(path)
    frames = []
    try:
        for i, frame in enumerate(reader):
            if i < start:
                continue
            if end is not None and i >= end:
                break
            frames.append(_resize(np.asarray(frame)[..., :3], wh_of(frame.shape[1], frame.shape[0])))
    except Exception as exc:  # noqa: BLE001 (any decoder failure is the file's: named in one line)
        raise InvalidInput(f"cannot decode video {path}: {ffmpeg_reason(exc)}") from None
    finally:
        reader.close()
    if not frames:
        raise InvalidInput(f"video {path.name} has no frames in the range starting at {start}")
    if end is not None and start + len(frames) < end:
        raise InvalidInput(f"video {path.name} has {start + len(frames)} frames, the range asks for frames "
                           f"{start}..{end - 1}")
    return np.stack(frames)


def read_poses_bounds(path: Path) -> np.ndarray:
    """``poses_bounds.npy`` as (N, 17) float64, refused in one line naming the file, the row and the problem when
    the cameras cannot be built from it: not a numeric (N, 17) array, NaN or infinite values, a rotation block
    (first three columns of each 3x5 pose) that is not orthonormal (an all-zero row, say), a height, width or focal
    that is not positive, or bounds without 0 <= near < far."""
    pb = load_array(path)
    if pb.dtype.kind not in "fiu":
        raise InvalidInput(f"{path}: dtype {pb.dtype}, expected float numbers")
    if pb.ndim != 2 or pb.shape[1] != 17 or len(pb) == 0:
        raise InvalidInput(f"{path}: shape {pb.shape}, expected (N, 17) with N >= 1 (LLFF: 3x5 pose + near, far)")
    pb = pb.astype(np.float64)
    bad = ~np.isfinite(pb).all(axis=1)
    if bad.any():
        raise InvalidInput(f"{path}: NaN or infinite values in row(s) {np.nonzero(bad)[0][:8].tolist()}")
    poses = pb[:, :15].reshape(-1, 3, 5)
    for i, pose in enumerate(poses):
        r = pose[:, :3]
        with np.errstate(over="ignore", invalid="ignore"):  # huge entries: inf, refused below
            err = float(np.abs(r.T @ r - np.eye(3)).max())
        if not err <= 1e-2:
            raise InvalidInput(f"{path}: row {i}: the rotation (first three columns of the 3x5 pose) is not "
                               f"orthonormal (max |R^T R - I| = {err:.3g}); not an LLFF poses_bounds file")
        h, w, focal = pose[:, 4]
        if not (h >= 1 and w >= 1 and focal > 0):
            raise InvalidInput(f"{path}: row {i}: height {h:g}, width {w:g} and focal {focal:g} must be positive")
        near, far = pb[i, 15], pb[i, 16]
        if not 0 <= near < far:
            raise InvalidInput(f"{path}: row {i}: bounds near {near:g}, far {far:g}; expected 0 <= near < far")
    return pb


def load_n3v(folder: str | Path, downsample: float = 1.0, frames: tuple[int, int | None] = (0, None),
             test_cameras: tuple[str, ...] = ("cam00",)) -> MultiViewVideo:
    """Read an N3V-layout folder (``poses_bounds.npy`` + ``camNN.mp4``).

    downsample: divide the video resolution by this factor (cv2 INTER_AREA; intrinsics scaled to match).
    frames: [start, end) source frame range (end None: to the end). test_cameras: held-out views (N3V: cam00).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"dataset folder {folder} does not exist")
    pb_path = folder / "poses_bounds.npy"
    if not pb_path.is_file():
        raise InvalidInput(f"{folder} is not an N3V dataset: poses_bounds.npy is missing")
    videos = sorted(folder.glob("cam[0-9][0-9].mp4"))
    if not videos:
        raise InvalidInput(f"{folder} has no camNN.mp4 videos")
    pb = read_poses_bounds(pb_path)
    if len(pb) != len(videos):
        raise InvalidInput(f"poses_bounds.npy has {len(pb)} poses but the folder has {len(videos)} camNN.mp4 "
                           f"videos ({', '.join(v.name for v in videos)})")
    names = [v.stem for v in videos]
    missing = [n for n in test_cameras if n not in names]
    if missing:
        raise InvalidInput(f"held-out camera(s) {missing} not in the dataset ({names})")
    start, end = frames
    count, size, fps = _video_header(videos[0])
    span = max(0, min(end if end is not None else count, count) - start)
    check_decoded_size(folder, len(videos), span, _target_size(*size, downsample), downsample)
    poses = pb[:, :15].reshape(-1, 3, 5)
    cameras, images = [], None
    for c, (v, pose, bounds) in enumerate(zip(videos, poses, pb[:, 15:])):
        h0, w0, focal = pose[:, 4]
        clip = _read_video(v, start, end, lambda w, h: _target_size(w, h, downsample))
        if images is None:  # every camera decoded into one array: no second copy of the whole video
            images = np.empty((len(videos),) + clip.shape, np.uint8)
        elif len(clip) != images.shape[1]:
            raise InvalidInput(f"videos have different frame counts ({videos[0].name}: {images.shape[1]}, {v.name}: "
                               f"{len(clip)}); pass a frame range every video covers")
        elif clip.shape[1:3] != images.shape[2:4]:
            raise InvalidInput(f"videos have different sizes ({videos[0].name}: {images.shape[2:4]}, {v.name}: "
                               f"{clip.shape[1:3]})")
        images[c] = clip
        # hwf is the size the poses were computed at; scale the intrinsics to the decoded (downsampled) size.
        K = np.array([[focal, 0, w0 / 2], [0, focal, h0 / 2], [0, 0, 1.0]])
        cameras.append(_scaled_camera(K, llff_to_world_to_cam(pose), (w0, h0),
                                      (clip.shape[2], clip.shape[1]), near=float(bounds[0]) * 0.5,
                                      far=float(bounds[1]) * 2.0))
    n = images.shape[1]
    test = [names.index(t) for t in test_cameras]
    return MultiViewVideo(cameras=cameras, names=names, images=images, times=_times(n), fps=fps,
                          train=[i for i in range(len(names)) if i not in test], test=test,
                          bounds=pb[:, 15:17].astype(np.float64), frame_numbers=np.arange(start, start + n),
                          source=str(folder))


def _times(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)


def _quat_wxyz_to_rotmat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def load_technicolor(folder: str | Path, downsample: float = 1.0, frames: tuple[int, int | None] | None = None,
                     test_cameras: tuple[int, ...] | None = None, fps: float = 30.0) -> MultiViewVideo:
    """Read a Technicolor folder as STG's preprocessing does (see the module docstring).

    frames: [start, end) of the frame numbers in the file names (None: the STG clip when the folder is named
    after a known scene, else every frame present). test_cameras: indices held out (None: the rig centre).
    """
    import cv2

    folder = Path(folder)
    params = folder / "cameras_parameters.txt"
    if not params.is_file():
        raise InvalidInput(f"{folder} is not a Technicolor dataset: cameras_parameters.txt is missing")
    rows = []
    for line in params.read_text(errors="replace").splitlines()[1:]:
        vals = line.split()
        if not vals:
            continue
        where = f"{params} row {len(rows) + 1}"
        if len(vals) < 12:
            raise InvalidInput(f"{where} has {len(vals)} values, expected 12 (f cx cy ar skew qw qx qy qz tx ty tz)")
        try:
            row = np.array([float(v) for v in vals[:12]])
        except ValueError:
            raise InvalidInput(f"{where}: {' '.join(vals[:12])[:200]!r} is not 12 numbers") from None
        if not np.isfinite(row).all() or row[0] <= 0 or not np.linalg.norm(row[5:9]) > 0:
            raise InvalidInput(f"{where}: values must be finite, the focal f > 0 and the quaternion qw qx qy qz "
                               "non-zero")
        rows.append(row)
    if not rows:
        raise InvalidInput("cameras_parameters.txt lists no cameras")
    found: dict[tuple[int, int], Path] = {}
    for p in folder.iterdir():
        m = _TECHNI_RE.match(p.name)
        if m:
            found[(int(m["frame"]), int(m["cam"]))] = p
    if not found:
        raise InvalidInput(f"{folder} has no <Scene>_undist_<frame>_<cam>.png (or .jpg) images")
    cams_present = sorted({c for _, c in found})
    if cams_present != list(range(len(rows))):
        raise InvalidInput(f"cameras_parameters.txt lists {len(rows)} cameras but images exist for cameras "
                           f"{cams_present}")
    all_frames = sorted({f for f, _ in found})
    if frames is None:
        frames = TECHNICOLOR_CLIPS.get(folder.name, (all_frames[0], all_frames[-1] + 1))
    start, end = frames[0], frames[1] if frames[1] is not None else all_frames[-1] + 1
    numbers = list(range(start, end))
    if not numbers:
        raise InvalidInput(f"the frame range {start}..{end - 1} holds no frame (frames present: {all_frames[0]}.."
                           f"{all_frames[-1]})")
    missing = [(f, c) for f in numbers for c in cams_present if (f, c) not in found]
    if missing:
        raise InvalidInput(f"{len(missing)} images missing for frames {start}..{end - 1}, e.g. frame {missing[0][0]} "
                           f"camera {missing[0][1]:02d} (the file names number frames {all_frames[0]}.."
                           f"{all_frames[-1]})")
    for f in numbers:  # every header before any pixel is decoded: a bomb or a corrupt header is one line, early
        for c in cams_present:
            check_image_header(found[(f, c)])
    first = cv2.imread(str(found[(numbers[0], 0)]), cv2.IMREAD_COLOR)
    if first is not None:  # unreadable: named by the loop below
        check_decoded_size(folder, len(rows), len(numbers), _target_size(first.shape[1], first.shape[0], downsample),
                           downsample)
    cameras, images = [], None
    for c, row in enumerate(rows):
        for k, f in enumerate(numbers):
            img = cv2.imread(str(found[(f, c)]), cv2.IMREAD_COLOR)
            if img is None:
                raise InvalidInput(f"cannot read image {found[(f, c)].name}")
            h0, w0 = img.shape[:2]  # the size the intrinsics are given at
            img = _resize(img[..., ::-1], _target_size(w0, h0, downsample))
            if images is None:  # every image decoded into one array: no second copy of the whole video
                images = np.empty((len(rows), len(numbers)) + img.shape, np.uint8)
            elif img.shape != images.shape[2:]:
                raise InvalidInput(f"images have different sizes: {found[(f, c)].name} is {img.shape[1]}x"
                                   f"{img.shape[0]} after downsampling, the first one {images.shape[3]}x"
                                   f"{images.shape[2]}")
            images[c, k] = img
        clip = images[c]
        w2c = np.eye(4)
        w2c[:3, :3] = _quat_wxyz_to_rotmat(row[5:9])
        w2c[:3, 3] = row[9:12]
        K = np.array([[row[0], 0, row[1]], [0, row[0], row[2]], [0, 0, 1.0]])
        cameras.append(_scaled_camera(K, w2c, (w0, h0), (clip.shape[2], clip.shape[1]), near=0.01, far=100.0))
    centres = np.stack([cam.center for cam in cameras])
    if test_cameras is None:
        test_cameras = (int(np.argmin(np.linalg.norm(centres - centres.mean(0), axis=1))),)
    test = list(test_cameras)
    return MultiViewVideo(cameras=cameras, names=[f"cam{c:02d}" for c in range(len(rows))], images=images,
                          times=_times(len(numbers)), fps=fps, train=[i for i in range(len(rows)) if i not in test],
                          test=test, bounds=np.tile([0.01, 100.0], (len(rows), 1)),
                          frame_numbers=np.array(numbers), source=str(folder))


def load_dataset(folder: str | Path, downsample: float = 1.0, frames: tuple[int, int | None] | None = None
                 ) -> MultiViewVideo:
    """Detect the layout of ``folder`` (N3V or Technicolor) and read it."""
    folder = Path(folder)
    if (folder / "poses_bounds.npy").is_file():
        return load_n3v(folder, downsample, frames or (0, None))
    if (folder / "cameras_parameters.txt").is_file():
        return load_technicolor(folder, downsample, frames)
    raise InvalidInput(f"{folder} is neither an N3V dataset (poses_bounds.npy + camNN.mp4) nor a Technicolor one "
                       f"(cameras_parameters.txt + <Scene>_undist_<frame>_<cam>.png)")
