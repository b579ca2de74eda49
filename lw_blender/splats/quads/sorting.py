"""Back-to-front draw order of splat carriers for EEVEE blended transparency, kept in numpy on view changes.

The splat node group draws slot i with Gaussian ``lw_order[i]`` (an INT point attribute, see ``nodes``).
This module computes that permutation for a view (eye e, forward f, perspective or not):

    depth_i = log |mu_i - e|        (perspective)        depth_i = (mu_i - e) . f      (orthographic)
    key_i   = round(65535 (d_max - depth_i) / (d_max - d_min))   (uint16, 0 = farthest)

(the log keeps a constant relative precision, 1.5e-4 from 2 m to a world's sky 50 km away, where a linear key
would put all of a near lake in a few metre-wide buckets)
    lw_order = argsort(key, stable)                        (numpy radix sort on 16 bits: ~13 ms at 1M)

and rewrites it only when the view changed: the forward direction turned by more than ANGLE_DEG or the eye
moved by more than MOVE_FRACTION of its distance to the Gaussians' median position (not the box centre, which
a world's sky 50 km away drags far from its ground; during a render: every frame). The modifier's "Sort" input is switched on with the order; engines that need no order (Cycles,
Workbench) get the attribute removed and the input switched off, so the node group skips the gather.

View-facing quads (``update_facing``). A quad in the plane of a Gaussian's two largest axes shows a sliver
when seen edge-on. Whenever quads are shown (renders; the viewport unless it shows points) each Gaussian's quad
is replaced, for the current view, by the quad of its projected ellipse, as 3DGS rasterizes it (EWA, local
affine): with d the viewing direction at mu (mu - e normalised; f when orthographic), e1, e2 an orthonormal
basis of the plane normal to d and M = R_q diag(s),

    Sigma_2 = [e1 e2]^T M M^T [e1 e2]     (the marginal of the 3D covariance across the view)
    Sigma_2 = V diag(l1, l2) V^T,  u = [e1 e2] V[:, 0],  v = d x u
    quad rotation = [u v d],  quad sigmas = (sqrt l1, sqrt l2, 1e-3 sqrt l2)

written as the ``lw_view_rotation`` (QUATERNION) and ``lw_view_scale`` (FLOAT_VECTOR) point attributes, which the
node group uses instead of ``rotation`` / ``scale`` when they exist (``nodes``). Same view-change rule as the
order; every frame while rendering. Outside renders only carriers of at most VIEWPORT_FACING_MAX Gaussians get
them (larger ones show the axis-plane quads in the viewport, or points by default from 500k); during viewport
playback sequences up to PLAYBACK_FACING_MAX Gaussians are refreshed every frame, larger ones keep the frame
of the last view change.

The view is the render camera while rendering, otherwise the first 3D viewport that shades
with the render engine (its ``region_3d`` view matrix; in Camera view that is the camera), else the scene
camera. Headless sessions have no viewport: the scene camera is used. Viewport points (``nodes``) use
dithered transparency: while they are shown, no order is kept (renders, which show quads, still get one).
"""

import math

import numpy as np

from ..data import write_attribute
from . import nodes
from .mesh import get_core

ORDER_ATTRIBUTE = "lw_order"
ANGLE_DEG = 2.0
MOVE_FRACTION = 0.01
SORTING_ENGINES = ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")

# session_uid -> (eye (3,), forward (3,), perspective, count, centre (3,)) of the last written order (local space)
_SORTED: dict[int, tuple] = {}


def back_to_front(positions: np.ndarray, eye, forward, perspective: bool = True) -> np.ndarray:
    """Permutation (N,) int32 drawing ``positions`` (N, 3) float32 from the farthest to the nearest."""
    eye = np.asarray(eye, dtype=np.float32)
    rel = positions - eye
    if perspective:
        depth = 0.5 * np.log(np.maximum(np.einsum("nc,nc->n", rel, rel), 1e-12))
    else:
        depth = rel @ np.asarray(forward, dtype=np.float32)
    if depth.size == 0:
        return np.empty(0, np.int32)
    lo, hi = float(depth.min()), float(depth.max())
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    key = ((hi - depth) * scale).astype(np.uint16)
    return np.argsort(key, kind="stable").astype(np.int32)


def view_changed(old, eye, forward, perspective: bool, centre) -> bool:
    """Whether the view (eye, forward, perspective) differs from ``old`` enough to re-sort."""
    if old is None:
        return True
    old_eye, old_forward, old_perspective = old[:3]
    if old_perspective != perspective:
        return True
    if float(np.dot(old_forward, forward)) < math.cos(math.radians(ANGLE_DEG)):
        return True
    reach = max(float(np.linalg.norm(np.asarray(eye) - centre)), 1e-6)
    return float(np.linalg.norm(np.asarray(eye) - old_eye)) > MOVE_FRACTION * reach


def _from_matrix(view_to_world, perspective: bool):
    m = np.array(view_to_world, dtype=np.float64)
    eye = m[:3, 3].astype(np.float32)
    forward = -m[:3, 2]
    forward = (forward / max(np.linalg.norm(forward), 1e-12)).astype(np.float32)
    return eye, forward, perspective


def _viewport(scene):
    """(eye, forward, perspective) of the 3D viewport showing ``scene`` that best matches its engine, or None."""
    import bpy

    wm = bpy.context.window_manager
    best = None
    for window in wm.windows if wm is not None else ():
        if window.scene != scene:
            continue
        for area in window.screen.areas:
            if area.type != "VIEW_3D":
                continue
            space = area.spaces.active
            region = space.region_3d
            if region is None:
                continue
            view = _from_matrix(region.view_matrix.inverted(), region.is_perspective)
            if space.shading.type in ("MATERIAL", "RENDERED"):
                return view
            best = best or view
    return best


def current_view(scene, rendering: bool = False):
    """(eye, forward, perspective) to sort for, or None when there is nothing to look from."""
    import bpy

    if not rendering and not bpy.app.background:
        found = _viewport(scene)
        if found is not None:
            return found
    camera = scene.camera
    if camera is None:
        return None
    return _from_matrix(camera.matrix_world, camera.data.type != "ORTHO")


def quads_shown(obj, rendering: bool) -> bool:
    """Whether ``obj``'s display shows quads now: always in renders, in the viewport unless it shows points."""
    modifier = obj.modifiers.get(nodes.MODIFIER_NAME)
    if modifier is None or modifier.node_group is None:
        return False
    if rendering:
        return modifier.show_render
    try:
        points = bool(nodes.get_input(modifier, nodes.POINTS_INPUT))
    except KeyError:
        points = False
    return modifier.show_viewport and not points


def needs_order(scene, obj, rendering: bool = False) -> bool:
    """True when ``obj`` shows quads that EEVEE draws with blended alpha: engine EEVEE, display modifier on, and
    (outside renders) "Viewport Points" off (the points' dithered transparency needs no order)."""
    return scene.render.engine in SORTING_ENGINES and quads_shown(obj, rendering)


def _use_order(obj, on: bool):
    """Switch the display modifier's Sort input (only when it differs: setting it re-evaluates the object)."""
    modifier = obj.modifiers.get(nodes.MODIFIER_NAME)
    if modifier is None or modifier.node_group is None:
        return
    try:
        if bool(nodes.get_input(modifier, nodes.SORT_INPUT)) != on:
            nodes.set_input(modifier, nodes.SORT_INPUT, on)
    except KeyError:  # a node group without the input (edited by the user): nothing to switch
        pass


def _to_local(obj, view):
    """A world-space view in ``obj``'s local space (where its positions live); depth order is preserved for
    rotations, translations and uniform scale."""
    eye, forward, perspective = view
    inverse = np.array(obj.matrix_world.inverted(), dtype=np.float64)
    local_eye = (inverse[:3, :3] @ eye + inverse[:3, 3]).astype(np.float32)
    local_forward = inverse[:3, :3] @ forward
    local_forward = (local_forward / max(np.linalg.norm(local_forward), 1e-12)).astype(np.float32)
    return local_eye, local_forward, perspective


def update_order(scene, obj, force: bool = False, rendering: bool = False) -> bool:
    """Keep ``obj``'s lw_order right for the current view; returns True when the mesh was changed.

    ``force``: re-sort even if the view did not change (the Gaussians moved: every rendered frame).
    """
    mesh = obj.data
    attr = mesh.attributes.get(ORDER_ATTRIBUTE)
    if not needs_order(scene, obj, rendering):
        _SORTED.pop(obj.session_uid, None)
        _use_order(obj, False)
        if attr is None:
            return False
        mesh.attributes.remove(attr)
        mesh.update()
        return True
    view = current_view(scene, rendering)
    if view is None:
        return False
    view = _to_local(obj, view)
    count = len(mesh.vertices)
    valid = attr is not None and attr.data_type == "INT" and attr.domain == "POINT"
    old = _SORTED.get(obj.session_uid) if valid else None
    if old is not None and old[3] != count:
        old = None
    if not force and old is not None and not view_changed(old, *view, old[4]):
        return False
    positions = np.empty(count * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", positions)
    positions = positions.reshape(-1, 3)
    order = back_to_front(positions, *view)
    centre = np.median(positions, axis=0) if count else np.zeros(3, np.float32)
    if not valid:
        if attr is not None:
            mesh.attributes.remove(attr)
        attr = mesh.attributes.new(ORDER_ATTRIBUTE, "INT", "POINT")
    attr.data.foreach_set("value", order)
    mesh.update()
    _use_order(obj, True)
    _SORTED[obj.session_uid] = (*view, count, centre)
    return True


VIEW_ROTATION = "lw_view_rotation"
VIEW_SCALE = "lw_view_scale"
# Outside renders, carriers above this many Gaussians keep the axis-plane quads: the facing frame costs ~0.6 s per
# view change at 1M on the 2-core box (numpy), too slow for navigation. Renders always get it.
VIEWPORT_FACING_MAX = 250_000
# During viewport playback, sequences of up to this many Gaussians get the frame (and order) every frame (~30 ms);
# larger ones keep those of the last view change until the view moves (renders: every frame).
PLAYBACK_FACING_MAX = 50_000
# session_uid -> (eye, forward, perspective, count, centre) of the last written view-facing quads (local space)
_FACING: dict[int, tuple] = {}


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products a b of quaternions (N, 4) w, x, y, z (the rotation b first, then a)."""
    aw, ax, ay, az = a.T
    bw, bx, by, bz = b.T
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], 1)


def _rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """v (N, 3) rotated by the unit quaternions q (N, 4) w, x, y, z."""
    u = q[:, 1:]
    t = 2.0 * np.cross(u, v)
    return v + q[:, :1] * t + np.cross(u, t)


def facing_quads(positions, rotations, scales, eye, forward, perspective: bool = True):
    """(rotation (N, 4) wxyz float32, sigmas (N, 3) float32) of each Gaussian's view-facing quad (module
    docstring) for a view from ``eye`` along ``forward``.

    The plane basis comes from the shortest-arc rotation taking z to +-d (to the hemisphere of z, so it is never
    singular; a half turn about x then makes the normal d), and the quad frame is that basis turned by theta
    about d: everything stays in quaternions, with no 3x3 matrices per Gaussian."""
    mu = np.asarray(positions, np.float32)
    n = len(mu)
    if n == 0:
        return np.empty((0, 4), np.float32), np.empty((0, 3), np.float32)
    fwd = np.asarray(forward, np.float32)
    d = mu - np.asarray(eye, np.float32) if perspective else np.broadcast_to(fwd, mu.shape)
    length = np.linalg.norm(d, axis=1, keepdims=True)
    d = np.where(length > 1e-12, d / np.maximum(length, 1e-12), fwd)
    flip = d[:, 2] < 0
    dd = np.where(flip[:, None], -d, d)  # z -> dd: w = 1 + dd_z >= 1, axis z x dd
    arc = np.stack([1.0 + dd[:, 2], -dd[:, 1], dd[:, 0], np.zeros(n, np.float32)], 1)
    arc /= np.linalg.norm(arc, axis=1, keepdims=True)
    half_x = np.zeros((n, 4), np.float32)
    half_x[:, 1] = 1.0  # a half turn about x: z -> -z
    basis = np.where(flip[:, None], _quat_mul(arc, half_x), arc)  # columns e1, e2, d
    e1 = _rotate(basis, np.broadcast_to(np.float32([1.0, 0.0, 0.0]), (n, 3)))
    e2 = _rotate(basis, np.broadcast_to(np.float32([0.0, 1.0, 0.0]), (n, 3)))
    q = np.asarray(rotations, np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    inverse = q * np.float32([1.0, -1.0, -1.0, -1.0])
    s = np.asarray(scales, np.float32)
    p1 = s * _rotate(inverse, e1)  # M^T e1 = diag(s) R^T e1
    p2 = s * _rotate(inverse, e2)
    a, b, c = (p1 * p1).sum(1), (p1 * p2).sum(1), (p2 * p2).sum(1)
    mid, rad = 0.5 * (a + c), np.sqrt((0.5 * (a - c)) ** 2 + b * b)
    l1, l2 = mid + rad, np.maximum(mid - rad, 0.0)
    half = 0.25 * np.arctan2(2.0 * b, a - c)  # theta / 2
    turn = np.zeros((n, 4), np.float32)
    turn[:, 0], turn[:, 3] = np.cos(half), np.sin(half)
    frame = _quat_mul(basis, turn)  # columns u, v = d x u, d
    s1, s2 = np.sqrt(l1), np.sqrt(l2)
    s2 = np.maximum(s2, 1e-6 * np.maximum(s1, 1e-12))
    sigmas = np.stack([s1, s2, 1e-3 * s2], 1)
    return frame.astype(np.float32), sigmas.astype(np.float32)


def update_facing(scene, obj, force: bool = False, rendering: bool = False) -> bool:
    """Keep ``obj``'s view-facing quads right for the current view while quads are shown; True when written.

    ``force``: rewrite even if the view did not change (the Gaussians moved: every rendered frame)."""
    mesh = obj.data
    if not quads_shown(obj, rendering) or "rotation" not in mesh.attributes or "scale" not in mesh.attributes:
        return False
    count = len(mesh.vertices)
    if not rendering and count > VIEWPORT_FACING_MAX:
        _FACING.pop(obj.session_uid, None)
        stale = [a for a in (VIEW_ROTATION, VIEW_SCALE) if a in mesh.attributes]  # a render's view, not this one
        for name in stale:
            mesh.attributes.remove(mesh.attributes[name])
        if stale:
            mesh.update()
        return bool(stale)
    view = current_view(scene, rendering)
    if view is None:
        return False
    view = _to_local(obj, view)
    old = _FACING.get(obj.session_uid) if VIEW_ROTATION in mesh.attributes else None
    if old is not None and old[3] != count:
        old = None
    if not force and old is not None and not view_changed(old, *view, old[4]):
        return False
    positions = get_core(mesh, "position")
    rotation, sigmas = facing_quads(positions, get_core(mesh, "rotation"), get_core(mesh, "scale"), *view)
    write_attribute(mesh, VIEW_ROTATION, "QUATERNION", "value", rotation)
    write_attribute(mesh, VIEW_SCALE, "FLOAT_VECTOR", "vector", sigmas)
    mesh.update()
    centre = np.median(positions, axis=0) if count else np.zeros(3, np.float32)
    _FACING[obj.session_uid] = (*view, count, centre)
    return True


def update_view(scene, obj, force: bool = False, rendering: bool = False) -> bool:
    """Draw order and view-facing quads of ``obj`` for the current view (``update_order``, ``update_facing``)."""
    changed = update_order(scene, obj, force=force, rendering=rendering)
    return update_facing(scene, obj, force=force, rendering=rendering) or changed


def forget():
    """Drop the remembered views (after loading a file): every carrier is re-sorted on its next check."""
    _SORTED.clear()
    _FACING.clear()
