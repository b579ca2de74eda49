"""The torch reference hash grid: layout, hashing, interpolation, gradients."""

import numpy as np
import pytest
import torch

from backend.errors import InvalidInput
from backend.fields import HashGridConfig, TorchHashGrid, encode_reference, level_layout, make_encoding

torch.set_num_threads(2)

TINY = HashGridConfig(n_levels=3, n_features_per_level=2, log2_table_size=6, base_resolution=2,
                      per_level_scale=2.0, bbox_min=(0, 0, 0), bbox_max=(1, 1, 1), backend="torch")


def test_default_layout_matches_instant_ngp_rule():
    lay = level_layout(HashGridConfig())
    assert len(lay.scale) == 16
    assert lay.resolution[0] == 16  # ceil(16 - 1) + 1
    # coarse levels are dense (R^3 rows rounded up to 8), fine levels hashed into 2^19 rows
    assert not lay.hashed[0] and lay.size[0] == 16**3
    assert lay.hashed[-1] and lay.size[-1] == 2**19
    assert lay.resolution[-1] > 3000
    assert lay.offset[-1] == lay.size.sum()


def test_hash_level_uses_instant_ngp_primes_and_collides():
    lay = level_layout(TINY)
    assert lay.hashed[2] and lay.size[2] == 64
    from backend.fields.hashgrid import _corner_index

    c = torch.tensor([[3, 5, 7], [1, 0, 0], [0, 1, 0]])
    expect = [((3 * 1) ^ (5 * 2654435761) ^ (7 * 805459861)) % 64, 1, 2654435761 % 64]
    assert _corner_index(c, 2, lay).tolist() == expect
    # a hashed level has more vertices than rows: distinct vertices must share rows (collisions)
    r = int(lay.resolution[2])
    grid = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
    rows = _corner_index(grid, 2, lay)
    assert rows.min() >= 0 and rows.max() < 64
    assert len(torch.unique(rows)) < len(grid)
    # the dense level indexes every vertex with its own row
    r0 = int(lay.resolution[0])
    grid0 = torch.stack(torch.meshgrid(*[torch.arange(r0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert len(torch.unique(_corner_index(grid0, 0, lay))) == r0**3


def test_interpolation_is_exact_at_grid_vertices():
    torch.manual_seed(0)
    enc = TorchHashGrid(TINY, dtype=torch.float64)
    with torch.no_grad():
        enc.table.normal_()
    lay = enc.layout
    from backend.fields.hashgrid import _corner_index

    for lvl in range(3):
        s = float(lay.scale[lvl])
        # reachable vertices: p = u * s + 0.5 spans [0.5, s + 0.5]
        v = torch.tensor([[1, 2, 3], [3, 1, 1], [2, 1, 2]], dtype=torch.int64).clamp(max=int(np.floor(s + 0.5)))
        u = (v.double() - 0.5) / s  # lands exactly on vertex v (s and v are exact binary fractions here)
        assert torch.equal(torch.floor(u * s + 0.5).long(), v)
        out = encode_reference(u, enc.table, lay)[:, lvl * 2:(lvl + 1) * 2]
        rows = _corner_index(v, lvl, lay) + int(lay.offset[lvl])
        torch.testing.assert_close(out, enc.table[rows].detach(), rtol=0, atol=1e-12)


def test_output_is_trilinear_between_vertices():
    enc = TorchHashGrid(TINY, dtype=torch.float64)
    with torch.no_grad():
        enc.table.normal_()
    a = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    b = torch.tensor([[0.12, 0.2, 0.3]], dtype=torch.float64)
    m = 0.5 * (a + b)
    # same cell on the finest level for these points -> features are affine along the segment
    ea, eb, em = (encode_reference(p, enc.table, enc.layout) for p in (a, b, m))
    torch.testing.assert_close(em, 0.5 * (ea + eb))


def test_gradients_match_finite_differences_float64():
    torch.manual_seed(1)
    enc = TorchHashGrid(TINY, dtype=torch.float64)
    with torch.no_grad():
        enc.table.normal_()
    u = torch.rand(5, 3, dtype=torch.float64) * 0.9 + 0.05
    u.requires_grad_(True)
    table = enc.table.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda uu, tt: encode_reference(uu, tt, enc.layout), (u, table))


def test_world_box_maps_to_unit_cube_and_clamps():
    cfg = HashGridConfig(n_levels=2, log2_table_size=8, base_resolution=4, bbox_min=(-2, 0, 10),
                         bbox_max=(2, 4, 12), backend="torch")
    enc = make_encoding(cfg)
    x = torch.tensor([[-2.0, 0.0, 10.0], [2.0, 4.0, 12.0], [0.0, 2.0, 11.0], [9.0, -9.0, 11.0]])
    u = enc.normalize(x)
    torch.testing.assert_close(u, torch.tensor([[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0.5]]))
    assert enc(x).shape == (4, 4)


def test_config_rejects_empty_box_and_unknown_backend():
    with pytest.raises(InvalidInput):
        HashGridConfig(bbox_min=(0, 0, 0), bbox_max=(1, 0, 1))
    with pytest.raises(InvalidInput):
        make_encoding(HashGridConfig(log2_table_size=8, backend="cuda-magic"))


def test_auto_backend_on_cpu_is_the_reference_and_state_dict_round_trips():
    cfg = HashGridConfig(n_levels=4, log2_table_size=10)
    enc = make_encoding(cfg)
    assert enc.name == "torch"
    other = make_encoding(cfg)
    other.load_state_dict(enc.state_dict())
    x = torch.rand(7, 3) * 2 - 1
    torch.testing.assert_close(enc(x), other(x))


def test_dense_levels_by_grid_sample_equal_the_reference_with_gradients_and_at_the_wrap():
    """``TorchHashGrid`` evaluates dense levels with one ``grid_sample``; values and gradients (table and inputs)
    equal the reference, and points whose corner would wrap (p > R - 1) fall back to it."""
    from backend.fields.hashgrid import _dense_level, encode

    cfg = HashGridConfig(n_levels=5, log2_table_size=18, base_resolution=16, per_level_scale=1.41, backend="torch")
    enc = TorchHashGrid(cfg, dtype=torch.float64)
    assert not enc.layout.hashed.any()
    with torch.no_grad():
        enc.table.normal_()
    torch.manual_seed(3)
    inside = torch.rand(400, 3, dtype=torch.float64) * 0.9 + 0.05
    edge = torch.rand(400, 3, dtype=torch.float64)
    edge[:5] = 1.0  # on the upper faces: level 0 (s = 15, R = 16) would wrap p = 15.5 to another row
    assert all(_dense_level(inside, enc.table, enc.layout, lvl) is not None for lvl in range(5))
    assert _dense_level(edge, enc.table, enc.layout, 0) is None
    for u in (inside, edge):
        u.requires_grad_(True)
        fast, ref = encode(u, enc.table, enc.layout), encode_reference(u, enc.table, enc.layout)
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
        w = torch.randn_like(ref)
        g_fast = torch.autograd.grad((fast * w).sum(), [enc.table, u])
        g_ref = torch.autograd.grad((ref * w).sum(), [enc.table, u])
        for a, b in zip(g_fast, g_ref):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_dense_levels_off_the_cpu_decide_from_the_level_alone():
    """Off the CPU the dense fast path must not read a value back (a sync per level, an error inside CUDA graph
    capture): on the meta device (which has no values) ``encode`` runs and takes the fast path exactly where
    every u in [0, 1] stays inside the volume (s + 0.5 <= R - 1): here only the last level (s = 62.24, R = 64;
    level 1 has s = 21.56, R = 23)."""
    from backend.fields.hashgrid import _dense_level, encode

    cfg = HashGridConfig(n_levels=5, log2_table_size=18, base_resolution=16, per_level_scale=1.41, backend="torch")
    lay = TorchHashGrid(cfg).layout
    table = torch.empty(lay.n_rows, 2, device="meta")
    u = torch.empty(10, 3, device="meta")
    assert encode(u, table, lay).shape == (10, 10)
    assert [_dense_level(u, table, lay, lvl) is not None for lvl in range(5)] == [False, False, False, False, True]


def test_morton_order_is_a_permutation_along_the_z_curve():
    from backend.fields import morton_order

    # the 8 corners of a cube come out in Z order: x the fastest bit, then y, then z
    corners = torch.tensor([[x, y, z] for z in (0.0, 1.0) for y in (0.0, 1.0) for x in (0.0, 1.0)])
    shuffled = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(corners[shuffled][morton_order(corners[shuffled])], corners)
    pts = torch.rand(20000, 3, generator=torch.Generator().manual_seed(1)) * 50 - 7
    order = morton_order(pts)
    assert torch.equal(torch.sort(order).values, torch.arange(len(pts)))
    step = (pts[order][1:] - pts[order][:-1]).norm(dim=1).mean()
    assert step < 0.1 * (pts[1:] - pts[:-1]).norm(dim=1).mean()  # neighbours in the order are neighbours in space
    assert morton_order(pts[:1]).tolist() == [0] and len(morton_order(pts[:0])) == 0
    with pytest.raises(InvalidInput):
        morton_order(pts, bits=22)
