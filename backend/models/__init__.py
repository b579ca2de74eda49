"""Pretrained-model providers behind small interfaces, each with a built-in fallback that needs no weights.

- ``depth``: ``DepthProvider`` — transformers depth estimation (Depth Anything V2 class), a user depth map,
  or the landscape-geometry fallback.
- ``segmentation``: ``SegmentationProvider`` — transformers semantic segmentation (SegFormer on ADE20k labels)
  or the colour/position heuristic; gives sky / water / ground masks.
- ``outpaint``: ``OutpaintProvider`` — diffusers Stable Diffusion 2 inpainting or the pyramid-fill fallback.

Which provider runs is chosen by ``ModelConfig`` (``backend.models.config``). Weights are only ever read from a
local folder or the local Hugging Face cache (``local_files_only=True``); nothing is downloaded.
"""
