"""Camera conventions, stated once.

``Camera`` is a pinhole camera in the OpenCV convention: camera frame x right, y down, z forward;
``world_to_cam`` maps world points (Blender Z-up metres) to that frame; ``K`` is in pixels with the pixel
centre of pixel (i, j) at (j + 0.5, i + 0.5) (x = column, y = row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    K: np.ndarray  # (3, 3) float64 intrinsics in pixels
    world_to_cam: np.ndarray  # (4, 4) float64, OpenCV camera frame
    width: int
    height: int
    near: float = 0.01
    far: float = 1.0e4

    @property
    def cam_to_world(self) -> np.ndarray:
        return np.linalg.inv(self.world_to_cam)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,)."""
        return self.cam_to_world[:3, 3].copy()


# --- Blender camera <-> OpenCV ---------------------------------------------------------------------------------
#
# Blender's perspective camera (BKE_camera_params_compute_viewplane): the image is W x H pixels
# (W = resolution_x * percentage // 100), pixel aspect ycor = pixel_aspect_y / pixel_aspect_x. The sensor fit
# decides which image side the sensor spans: AUTO -> HORIZONTAL when pixel_aspect_x * W >= pixel_aspect_y * H,
# else VERTICAL. The spanned length is viewfac = W (HORIZONTAL) or ycor * H (VERTICAL) "x-pixels", and the
# sensor size used is sensor_height for an explicit VERTICAL fit, sensor_width otherwise (also for AUTO).
# Then, in pixels, with the camera looking down -Z and Y up:
#     fx = lens * viewfac / sensor,   fy = fx / ycor,
#     cx = W / 2 - shift_x * viewfac, cy = H / 2 + shift_y * viewfac / ycor   (OpenCV rows grow downwards).
# Camera frames: OpenCV = Blender camera frame with y and z flipped: x_cv = x_bl, y_cv = -y_bl, z_cv = -z_bl.

SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")
_FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class BlenderCameraSpec:
    """A Blender perspective camera as the add-on sends it (docs/ARCHITECTURE.md, "Blender camera spec").

    matrix_world: 4x4 row-major camera-to-world of the camera object (it may carry scale; only its rotation and
    translation are used). Lengths in mm; shifts in units of the fitted image side; clip in scene metres.
    """

    matrix_world: tuple[tuple[float, ...], ...]
    lens: float = 50.0
    sensor_width: float = 36.0
    sensor_height: float = 24.0
    sensor_fit: str = "AUTO"
    shift_x: float = 0.0
    shift_y: float = 0.0
    clip_start: float = 0.1
    clip_end: float = 1000.0
    resolution_x: int = 1920
    resolution_y: int = 1080
    resolution_percentage: int = 100
    pixel_aspect_x: float = 1.0
    pixel_aspect_y: float = 1.0

    @staticmethod
    def from_dict(data: dict) -> BlenderCameraSpec:
        """Parse the JSON object; raises InvalidInput naming the bad field."""
        from ..errors import InvalidInput

        known = set(BlenderCameraSpec.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidInput(f"unknown camera field(s) {sorted(unknown)}; expected some of {sorted(known)}")
        if "matrix_world" not in data:
            raise InvalidInput("camera spec needs 'matrix_world' (4x4 row-major list of lists)")
        try:
            m = np.asarray(data["matrix_world"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"camera 'matrix_world' is not a 4x4 matrix of numbers: {exc}") from exc
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise InvalidInput(f"camera 'matrix_world' must be a finite 4x4 matrix, got shape {m.shape}")
        kwargs = {"matrix_world": tuple(tuple(float(v) for v in row) for row in m)}
        for name, f in BlenderCameraSpec.__dataclass_fields__.items():
            if name == "matrix_world" or name not in data:
                continue
            typ = {"int": int, "float": float, "str": str}[f.type]
            try:
                kwargs[name] = typ(data[name]) if typ is not int else round(float(data[name]))
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"camera field {name!r} must be {f.type}, got {data[name]!r}") from exc
        spec = BlenderCameraSpec(**kwargs)
        spec.check()
        return spec

    def to_dict(self) -> dict:
        """The JSON object (lists, plain numbers)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["matrix_world"] = [list(row) for row in self.matrix_world]
        return out

    def check(self) -> None:
        """Raise InvalidInput when the camera cannot be converted."""
        from ..errors import InvalidInput

        if self.sensor_fit not in SENSOR_FITS:
            raise InvalidInput(f"sensor_fit must be one of {SENSOR_FITS}, got {self.sensor_fit!r}")
        positive = ["lens", "sensor_width", "sensor_height", "clip_start", "resolution_x", "resolution_y",
                    "resolution_percentage", "pixel_aspect_x", "pixel_aspect_y"]
        for name in positive:
            if not getattr(self, name) > 0:
                raise InvalidInput(f"camera {name} must be > 0, got {getattr(self, name)}")
        if not self.clip_end > self.clip_start:
            raise InvalidInput(f"camera clip_end ({self.clip_end}) must exceed clip_start ({self.clip_start})")
        if self.image_size[0] < 1 or self.image_size[1] < 1:
            raise InvalidInput(f"render size {self.image_size} is empty: raise resolution_percentage")

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) in pixels after the resolution percentage, as Blender renders them."""
        return (self.resolution_x * self.resolution_percentage // 100,
                self.resolution_y * self.resolution_percentage // 100)


def _fit(sensor_fit: str, width: int, height: int, aspect_x: float, aspect_y: float) -> tuple[str, float]:
    """Resolved fit (HORIZONTAL | VERTICAL) and viewfac (the fitted side in x-pixel units)."""
    fit = sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if aspect_x * width >= aspect_y * height else "VERTICAL"
    ycor = aspect_y / aspect_x
    return fit, (float(width) if fit == "HORIZONTAL" else ycor * height)


def world_to_cam_from_blender(matrix_world) -> np.ndarray:
    """OpenCV world->camera (4, 4) from a Blender camera object's matrix_world (scale removed)."""
    m = np.asarray(matrix_world, dtype=np.float64)
    rot = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0, keepdims=True)
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rot, m[:3, 3]
    return _FLIP_YZ @ np.linalg.inv(c2w)


def blender_matrix_world(world_to_cam) -> np.ndarray:
    """Blender camera matrix_world (4, 4) (looks down -Z, Y up) from an OpenCV world->camera."""
    return np.linalg.inv(np.asarray(world_to_cam, dtype=np.float64)) @ _FLIP_YZ


def blender_to_opencv(spec: BlenderCameraSpec) -> Camera:
    """The Camera that sees exactly what Blender renders for ``spec`` (see the equations above)."""
    spec.check()
    w, h = spec.image_size
    ycor = spec.pixel_aspect_y / spec.pixel_aspect_x
    _, viewfac = _fit(spec.sensor_fit, w, h, spec.pixel_aspect_x, spec.pixel_aspect_y)
    sensor = spec.sensor_height if spec.sensor_fit == "VERTICAL" else spec.sensor_width
    fx = spec.lens * viewfac / sensor
    K = np.array([[fx, 0.0, w / 2 - spec.shift_x * viewfac],
                  [0.0, fx / ycor, h / 2 + spec.shift_y * viewfac / ycor],
                  [0.0, 0.0, 1.0]])
    return Camera(K=K, world_to_cam=world_to_cam_from_blender(spec.matrix_world), width=w, height=h,
                  near=spec.clip_start, far=spec.clip_end)


def opencv_to_blender(camera: Camera, sensor_width: float = 36.0, sensor_height: float = 24.0,
                      sensor_fit: str = "AUTO") -> BlenderCameraSpec:
    """The Blender camera (resolution at 100 %) that renders what ``camera`` sees.

    Non-square pixels (fx != fy) become a pixel aspect with the smaller value 1; the principal point becomes
    the lens shift. Raises InvalidInput for a skewed K.
    """
    from ..errors import InvalidInput

    K = np.asarray(camera.K, dtype=np.float64)
    if abs(K[0, 1]) > 1e-9 * abs(K[0, 0]) or np.any(K[2] != [0, 0, 1]) or K[1, 0] != 0:
        raise InvalidInput(f"Blender cameras have no skew: K must be [[fx,0,cx],[0,fy,cy],[0,0,1]], got {K.tolist()}")
    if sensor_fit not in SENSOR_FITS:
        raise InvalidInput(f"sensor_fit must be one of {SENSOR_FITS}, got {sensor_fit!r}")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # ycor = aspect_y / aspect_x = fx / fy; Blender wants both aspects >= 1.
    aspect_x, aspect_y = (fy / fx, 1.0) if fy >= fx else (1.0, fx / fy)
    ycor = aspect_y / aspect_x
    w, h = int(camera.width), int(camera.height)
    _, viewfac = _fit(sensor_fit, w, h, aspect_x, aspect_y)
    sensor = sensor_height if sensor_fit == "VERTICAL" else sensor_width
    m = blender_matrix_world(camera.world_to_cam)
    return BlenderCameraSpec(
        matrix_world=tuple(tuple(float(v) for v in row) for row in m), lens=float(fx * sensor / viewfac),
        sensor_width=float(sensor_width), sensor_height=float(sensor_height), sensor_fit=sensor_fit,
        shift_x=float((w / 2 - cx) / viewfac), shift_y=float((cy - h / 2) * ycor / viewfac),
        clip_start=float(camera.near), clip_end=float(camera.far), resolution_x=w, resolution_y=h,
        resolution_percentage=100, pixel_aspect_x=float(aspect_x), pixel_aspect_y=float(aspect_y))


# --- Cameras for the pipelines ----------------------------------------------------------------------------------

def look_at(eye, target, up=(0.0, 0.0, 1.0), *, K, width: int, height: int, near: float = 0.01,
            far: float = 1.0e4) -> Camera:
    """Camera at ``eye`` looking at ``target`` (world, Blender Z-up), image rows going along -``up``.

    z_cam = (target - eye) / |.|, x_cam = z_cam x up / |.|, y_cam = z_cam x x_cam; world_to_cam = [R | -R eye]
    with R's rows x_cam, y_cam, z_cam. Raises InvalidInput when ``up`` is parallel to the view direction.
    """
    from ..errors import InvalidInput

    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    if np.linalg.norm(z) < 1e-12:
        raise InvalidInput("look_at: eye and target coincide")
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        raise InvalidInput("look_at: 'up' is parallel to the viewing direction; pass another up vector")
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([x, y, z])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return Camera(K=np.asarray(K, dtype=np.float64), world_to_cam=w2c, width=int(width), height=int(height),
                  near=near, far=far)


def intrinsics_from_fov(width: int, height: int, fov_deg: float, axis: str = "horizontal") -> np.ndarray:
    """Square-pixel K with the principal point at the image centre and the given field of view across the
    horizontal or vertical side: f = side / (2 tan(fov / 2))."""
    side = width if axis == "horizontal" else height
    f = side / (2.0 * np.tan(np.radians(fov_deg) / 2.0))
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def camera_from_fov(eye, target, width: int, height: int, fov_deg: float = 60.0, up=(0.0, 0.0, 1.0),
                    axis: str = "horizontal", near: float = 0.01, far: float = 1.0e4) -> Camera:
    """``look_at`` with ``intrinsics_from_fov``: the usual way a pipeline places a virtual camera."""
    return look_at(eye, target, up, K=intrinsics_from_fov(width, height, fov_deg, axis), width=width,
                   height=height, near=near, far=far)
