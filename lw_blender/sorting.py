"""Back-to-front draw order of splat carriers for EEVEE blended transparency, kept in numpy on view changes.

The splat node group draws slot i with Gaussian ``lw_order[i]`` (an INT point attribute, see splat_nodes).
This module computes that permutation for a view (eye e, forward f, perspective or not):

    depth_i = |mu_i - e|            (perspective)        depth_i = (mu_i - e) . f      (orthographic)
    key_i   = round(65535 (d_max - depth_i) / (d_max - d_min))   (uint16, 0 = farthest)
    lw_order = argsort(key, stable)                        (numpy radix sort on 16 bits: ~13 ms at 1M)

and rewrites it only when the view changed: the forward direction turned by more than ANGLE_DEG or the eye
moved by more than MOVE_FRACTION of its distance to the Gaussians' bounding-box centre (during a render:
every frame). The modifier's "Sort" input is switched on with the order; engines that need no order (Cycles,
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
node group uses instead of ``rotation`` / ``scale`` when they exist (splat_nodes). Same view-change rule as the
order; every frame while rendering. Outside renders only carriers of at most VIEWPORT_FACING_MAX Gaussians get
them (larger ones show the axis-plane quads in the viewport, or points by default from 500k); during viewport
playback the frame is kept from the last view change (sequences move Gaussians a little per frame).

The view is the render camera while rendering, otherwise the first 3D viewport that shades
with the render engine (its ``region_3d`` view matrix; in Camera view that is the camera), else the scene
camera. Headless sessions have no viewport: the scene camera is used. Viewport points (splat_nodes) use
dithered transparency: while they are shown, no order is kept (renders, which show quads, still get one).
"""

import math

import numpy as np

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
        depth = np.sqrt(np.einsum("nc,nc->n", rel, rel))
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
    from . import splat_nodes

    modifier = obj.modifiers.get(splat_nodes.MODIFIER_NAME)
    if modifier is None or modifier.node_group is None:
        return False
    if rendering:
        return modifier.show_render
    try:
        points = bool(splat_nodes.get_input(modifier, splat_nodes.POINTS_INPUT))
    except KeyError:
        points = False
    return modifier.show_viewport and not points


def needs_order(scene, obj, rendering: bool = False) -> bool:
    """True when ``obj`` shows quads that EEVEE draws with blended alpha: engine EEVEE, display modifier on, and
    (outside renders) "Viewport Points" off (the points' dithered transparency needs no order)."""
    return scene.render.engine in SORTING_ENGINES and quads_shown(obj, rendering)


def _use_order(obj, on: bool):
    """Switch the display modifier's Sort input (only when it differs: setting it re-evaluates the object)."""
    from . import splat_nodes

    modifier = obj.modifiers.get(splat_nodes.MODIFIER_NAME)
    if modifier is None or modifier.node_group is None:
        return
    try:
        if bool(splat_nodes.get_input(modifier, splat_nodes.SORT_INPUT)) != on:
            splat_nodes.set_input(modifier, splat_nodes.SORT_INPUT, on)
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
    centre = 0.5 * (positions.min(axis=0) + positions.max(axis=0)) if count else np.zeros(3, np.float32)
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
# Outside renders, carriers above this many Gaussians keep the axis-plane quads: the facing frame costs ~1.2 s per
# view change at 1M on the 2-core box (numpy), too slow for navigation. Renders always get it.
VIEWPORT_FACING_MAX = 250_000
# session_uid -> (eye, forward, perspective, count, centre) of the last written view-facing quads (local space)
_FACING: dict[int, tuple] = {}


def matrices_to_wxyz(m: np.ndarray) -> np.ndarray:
    """Unit quaternions (N, 4) w, x, y, z of rotation matrices (N, 3, 3) (the largest of w, x, y, z first)."""
    m = np.asarray(m, np.float64)
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cand = np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], 1)
    pick = np.argmax(cand, axis=1)
    q = np.empty((len(m), 4))
    for k in range(4):
        sel = pick == k
        if not sel.any():
            continue
        a = m[sel]
        if k == 0:
            r = np.sqrt(np.maximum(1.0 + tr[sel], 1e-12)) * 2.0
            q[sel] = np.stack([0.25 * r, (a[:, 2, 1] - a[:, 1, 2]) / r, (a[:, 0, 2] - a[:, 2, 0]) / r,
                               (a[:, 1, 0] - a[:, 0, 1]) / r], 1)
        else:
            i = k - 1
            j, l = (i + 1) % 3, (i + 2) % 3
            r = np.sqrt(np.maximum(1.0 + a[:, i, i] - a[:, j, j] - a[:, l, l], 1e-12)) * 2.0
            qq = np.empty((len(a), 4))
            qq[:, 0] = (a[:, l, j] - a[:, j, l]) / r
            qq[:, 1 + i] = 0.25 * r
            qq[:, 1 + j] = (a[:, j, i] + a[:, i, j]) / r
            qq[:, 1 + l] = (a[:, l, i] + a[:, i, l]) / r
            q[sel] = qq
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def facing_quads(positions, rotations, scales, eye, forward, perspective: bool = True):
    """(rotation (N, 4) wxyz float32, sigmas (N, 3) float32) of each Gaussian's view-facing quad (module
    docstring) for a view from ``eye`` along ``forward``."""
    mu = np.asarray(positions, np.float64)
    n = len(mu)
    if n == 0:
        return np.empty((0, 4), np.float32), np.empty((0, 3), np.float32)
    d = mu - np.asarray(eye, np.float64) if perspective else np.broadcast_to(np.asarray(forward, np.float64), mu.shape)
    length = np.linalg.norm(d, axis=1, keepdims=True)
    d = np.where(length > 1e-12, d / np.maximum(length, 1e-12), np.asarray(forward, np.float64))
    helper = np.where(np.abs(d[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    e1 = np.cross(helper, d)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(d, e1)
    q = np.asarray(rotations, np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    w, x, y, z = q.T
    rot = np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], 1),
                    np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], 1),
                    np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1)], 1)
    m = rot * np.asarray(scales, np.float64)[:, None, :]  # R diag(s)
    p1 = np.einsum("nij,ni->nj", m, e1)  # M^T e1
    p2 = np.einsum("nij,ni->nj", m, e2)
    a, b, c = (p1 * p1).sum(1), (p1 * p2).sum(1), (p2 * p2).sum(1)
    mid, rad = 0.5 * (a + c), np.sqrt((0.5 * (a - c)) ** 2 + b * b)
    l1, l2 = mid + rad, np.maximum(mid - rad, 0.0)
    theta = 0.5 * np.arctan2(2.0 * b, a - c)
    u = np.cos(theta)[:, None] * e1 + np.sin(theta)[:, None] * e2
    v = np.cross(d, u)
    frames = np.stack([u, v, d], axis=2)  # columns: quad x, quad y, normal
    s1, s2 = np.sqrt(l1), np.sqrt(l2)
    s2 = np.maximum(s2, 1e-6 * np.maximum(s1, 1e-12))
    sigmas = np.stack([s1, s2, 1e-3 * s2], 1)
    return matrices_to_wxyz(frames).astype(np.float32), sigmas.astype(np.float32)


def _read(mesh, name: str, width: int, key: str) -> np.ndarray:
    out = np.empty(len(mesh.vertices) * width, np.float32)
    mesh.attributes[name].data.foreach_get(key, out)
    return out.reshape(-1, width)


def _write(mesh, name: str, data_type: str, key: str, values: np.ndarray) -> None:
    attr = mesh.attributes.get(name)
    if attr is not None and (attr.data_type != data_type or attr.domain != "POINT"):
        mesh.attributes.remove(attr)
        attr = None
    if attr is None:
        attr = mesh.attributes.new(name, data_type, "POINT")
    attr.data.foreach_set(key, np.ascontiguousarray(values, np.float32).ravel())


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
    positions = _read(mesh, "position", 3, "vector")
    rotation, sigmas = facing_quads(positions, _read(mesh, "rotation", 4, "value"), _read(mesh, "scale", 3, "vector"),
                                    *view)
    _write(mesh, VIEW_ROTATION, "QUATERNION", "value", rotation)
    _write(mesh, VIEW_SCALE, "FLOAT_VECTOR", "vector", sigmas)
    mesh.update()
    centre = 0.5 * (positions.min(axis=0) + positions.max(axis=0)) if count else np.zeros(3, np.float32)
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
