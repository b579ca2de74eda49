"""Rendering core: one ``rasterize`` API (gsplat on CUDA, pure-torch reference on CPU) and camera conventions."""
