"""The quad display (Blender 4.2-5.2, before native splats): ``mesh`` (the carrier's vertex attributes),
``nodes`` (Geometry Nodes instanced quads), ``material`` (Gaussian falloff + emission) and ``sorting``
(back-to-front order and view-facing ellipses in numpy)."""
