"""Filling the missing region of a rendered view (outpainting).

Providers:
- ``DiffusersInpaint``: diffusers ``StableDiffusionInpaintPipeline`` (the Stable Diffusion 2 inpainting class)
  from local weights, at its native 512 px, with the method's negative prompt.
- ``PyramidInpaint``: built-in fallback from OpenCV: Telea inpainting near the hole border, a push-pull pyramid
  fill (a smooth membrane, not a smear) inside, plus texture noise with the local contrast of the known image.

Known pixels are always returned unchanged: out = m * fill + (1 - m) * image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from ..errors import InvalidInput
from .hub import load_local, torch_device

NEGATIVE_PROMPT = ("border, frame, picture frame, text, letters, watermark, signature, blurry, out of focus, "
                   "low quality, person, people, crowd, human")


class OutpaintProvider(Protocol):
    name: str

    def outpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str = "", seed: int = 0) -> np.ndarray:
        """image (H, W, 3) float32 in [0, 1], mask (H, W) bool (True = fill) -> filled image (H, W, 3) float32."""
        ...


def _push_pull(values: np.ndarray, weight: np.ndarray, horizontal_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Push-pull over a pyramid halving the width (and the height unless ``horizontal_only``) per level.

    Push: c_{l+1} = down(w_l c_l) / down(w_l), w_{l+1} = down(w_l) (area averages).
    Pull: c_l <- a_l c_l + (1 - a_l) up(c_{l+1}), a_l = min(1, 4 w_l).
    Returns the filled values (H, W, C) and the support (H, W): 0 where no known value reached a pixel.
    """
    levels = [(values * weight[..., None], weight)]
    c, w = levels[0]
    while c.shape[1] > 1 and (horizontal_only or c.shape[0] > 1):
        size = (max(c.shape[1] // 2, 1), c.shape[0] if horizontal_only else max(c.shape[0] // 2, 1))
        c = cv2.resize(c, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        w = cv2.resize(w, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0])
        levels.append((c, w))
    filled = levels[-1][0] / np.maximum(levels[-1][1], 1e-12)[..., None]
    support = (levels[-1][1] > 0).astype(np.float32)
    for c, w in reversed(levels[:-1]):
        size = (c.shape[1], c.shape[0])
        up = cv2.resize(filled, size, interpolation=cv2.INTER_LINEAR).reshape(c.shape)
        up_support = cv2.resize(support, size, interpolation=cv2.INTER_LINEAR).reshape(w.shape)
        a = np.clip(4.0 * w, 0, 1)
        filled = a[..., None] * (c / np.maximum(w, 1e-12)[..., None]) + (1 - a[..., None]) * up
        support = np.maximum(a, up_support)
    return filled, support


def push_pull_fill(values: np.ndarray, known: np.ndarray, horizontal_first: bool = True) -> np.ndarray:
    """Fill unknown pixels of ``values`` (H, W, C) from ``known`` (H, W) bool by push-pull interpolation.

    With ``horizontal_first`` every row is first continued sideways from its own known pixels (landscapes
    continue horizontally: the horizon, a lake, a hill range), and only rows with no known pixel are filled
    by the isotropic pyramid. Smooth everywhere, exact where known.
    """
    vals = values.astype(np.float32).reshape(values.shape[0], values.shape[1], -1)
    weight = known.astype(np.float32)
    if horizontal_first:
        vals, support = _push_pull(vals, weight, horizontal_only=True)
        weight = (support > 0.5).astype(np.float32)
    filled, _ = _push_pull(vals, weight, horizontal_only=False)
    out = np.where(known[..., None], values.reshape(vals.shape), filled).astype(np.float32)
    return out.reshape(values.shape)


@dataclass(frozen=True)
class PyramidInpaintConfig:
    telea_radius: int = 5
    border_px: float = 6.0  # width of the Telea band at the hole border (px at 512 px)
    texture_sigmas: tuple[float, ...] = (1.5, 6.0)  # band edges of the texture measured on the known image (px)


class PyramidInpaint:
    """Fallback outpainting (no weights).

    1. Telea fast marching (``cv2.inpaint``) gives sharp continuation in a band of ``border_px`` at the border.
    2. ``push_pull_fill`` gives the low frequencies deeper inside (rows continued sideways first).
    3. Texture, per band b = G_{s_{k-1}} * I - G_{s_k} * I of the known image: its local energy
       e_b = sqrt(G * b^2) is pushed into the hole and multiplies noise n_b of the same scale (unit variance),
       so the fill has the grain of its surroundings instead of a flat smear: fill += sum_b e_b n_b.
    """

    name = "builtin:pyramid"

    def __init__(self, config: PyramidInpaintConfig = PyramidInpaintConfig()):
        self.config = config

    def outpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str = "", seed: int = 0) -> np.ndarray:
        cfg = self.config
        img = np.clip(image, 0, 1).astype(np.float32)
        hole = mask.astype(bool)
        if not hole.any():
            return img.copy()
        known = ~hole
        if not known.any():
            rng = np.random.default_rng(seed)
            return np.clip(0.5 + 0.05 * rng.standard_normal(img.shape), 0, 1).astype(np.float32)
        img8 = (img * 255 + 0.5).astype(np.uint8)
        telea = cv2.inpaint(img8, hole.astype(np.uint8), cfg.telea_radius, cv2.INPAINT_TELEA).astype(np.float32) / 255
        smooth = push_pull_fill(img, known)
        dist = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5)
        t = np.clip(dist / (cfg.border_px * max(img.shape[:2]) / 512.0), 0, 1)[..., None]
        base = (1 - t) * telea + t * smooth
        rng = np.random.default_rng(seed)
        out = base
        lo = img
        px = max(img.shape[:2]) / 512.0  # band scales are stated for a 512 px image
        for sigma in (s * px for s in cfg.texture_sigmas):  # fine grain, then coarser blotches
            blurred = cv2.GaussianBlur(img, (0, 0), sigma)
            band = lo - blurred
            lo = blurred
            energy = np.sqrt(cv2.GaussianBlur(band**2 * known[..., None], (0, 0), 2 * sigma)
                             / np.maximum(cv2.GaussianBlur(known.astype(np.float32), (0, 0), 2 * sigma), 1e-6)[..., None])
            energy = push_pull_fill(energy, known)
            noise = cv2.GaussianBlur(rng.standard_normal(img.shape[:2]).astype(np.float32), (0, 0), 0.5 * sigma)
            noise /= max(float(noise.std()), 1e-6)
            out = out + t * energy * noise[..., None]
        return np.where(hole[..., None], np.clip(out, 0, 1), img).astype(np.float32)


COMPILE_MIN_FREE = 4 * 2**30  # bytes of free GPU memory the "auto" background compile needs to start


class DiffusersInpaint:
    """``StableDiffusionInpaintPipeline`` from a local folder or the HF cache (e.g.
    ``stabilityai/stable-diffusion-2-inpainting``), run at ``size`` px with ``steps`` denoising steps and
    classifier-free guidance ``guidance``; the result is resized back and pasted into the hole only.

    On CUDA: float16, SDPA attention, channels-last convolutions, the guided and unguided halves in one UNet
    call (diffusers batches them), the prompt's text embeddings computed once per prompt and kept, timesteps on
    the host (the scheduler reads its tables without waiting for the GPU), and ``accel`` (``backend.models.accel``):
    "auto" (the default) replays the UNet from CUDA graphs at once (the eager kernels, captured in about a
    second) and, after the first call, compiles the UNet and the VAE with ``torch.compile`` in a background
    thread; the next call after the compile ends uses the compiled kernels, replayed from CUDA graphs too
    (``compile_state`` says where it stands; the process keeps them). "graphs" replays the eager UNet only,
    "inductor" compiles the UNet and the VAE in the first call (it waits a minute or two), "off" runs eagerly.
    ``setup_s`` holds the capture / compile time spent in calls so far (the background compile is not in it).
    """

    def __init__(self, name_or_path: str, device: str = "auto", steps: int = 30, guidance: float = 7.5,
                 size: int = 512, accel: str = "auto"):
        import torch
        from diffusers import StableDiffusionInpaintPipeline

        from . import accel as acc

        self.name = f"diffusers:{name_or_path}"
        self.device = torch_device(device)
        cuda = self.device.startswith("cuda")
        dtype = torch.float16 if cuda else torch.float32
        self.pipe = load_local(StableDiffusionInpaintPipeline.from_pretrained, name_or_path, "inpainting model",
                               dtype=dtype, safety_checker=None, requires_safety_checker=False)
        self.pipe = self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.steps, self.guidance, self.size = steps, guidance, size
        self.accel = ("auto" if cuda else "off") if accel == "auto" else accel
        if self.accel not in acc.MODES:
            raise InvalidInput(f"outpaint acceleration {accel!r}: choose {', '.join(acc.MODES)}")
        if self.accel != "off" and not cuda:
            raise InvalidInput(f"outpaint acceleration {self.accel!r} needs CUDA; use 'off' (or 'auto') on the CPU")
        self._embeds: dict[str, tuple] = {}
        self._wrappers: list = []
        self._compile: acc.BackgroundCompile | None = None
        self._skipped: str | None = None  # why the background compile did not start
        self.last_kernels = self.kernels
        if cuda:
            from diffusers.models.attention_processor import AttnProcessor2_0

            torch.backends.cudnn.benchmark = True  # fixed 512 px shapes: let cuDNN time its convolution kernels once
            for model in (self.pipe.unet, self.pipe.vae):
                if hasattr(model, "set_attn_processor"):
                    model.set_attn_processor(AttnProcessor2_0())
            self.pipe.unet.to(memory_format=torch.channels_last)
            self.pipe.vae.to(memory_format=torch.channels_last)
            _timesteps_on_host(self.pipe.scheduler)
            self._wrappers.append(acc.install(self.pipe.unet, self.accel))
            if self.accel in ("inductor", "auto"):
                self._wrappers += [acc.install(self.pipe.vae.encoder, self.accel, timestep_arg=False),
                                   acc.install(self.pipe.vae.decoder, self.accel, timestep_arg=False)]

    @property
    def compile_state(self) -> str:
        """Where the "auto" background compile stands: "not started" (before the first call), "compiling",
        "adopted" (the compiled kernels run), "failed: why", "skipped: why" (less than ``COMPILE_MIN_FREE`` of
        GPU memory free after the first call: the graphs of the eager kernels stay); "none" for the other modes."""
        if self.accel != "auto":
            return "none"
        if self._skipped is not None:
            return self._skipped
        return "not started" if self._compile is None else self._compile.poll()

    @property
    def kernels(self) -> str:
        """Which UNet kernels the next call runs, in words (a step's stats record it as ``outpaint_kernels``)."""
        if self.accel == "off":
            return "eager"
        if self.accel == "graphs":
            return "eager kernels replayed from CUDA graphs"
        if self.accel == "inductor":
            return "torch.compile (inductor) with CUDA graphs"
        state = self.compile_state
        if state == "adopted" or (state.startswith("failed") and self._wrappers[0].fn is not self._wrappers[0].eager):
            return "torch.compile (inductor) kernels replayed from CUDA graphs"
        return f"eager kernels replayed from CUDA graphs (background compile: {state})"

    def wait_compiled(self, timeout: float | None = None) -> str:
        """Wait for the background compile (a benchmark's warm state; jobs never wait) and adopt it."""
        if self._compile is not None:
            self._compile.wait(timeout)
        return self.compile_state

    @property
    def setup_s(self) -> float:
        return sum(getattr(w, "capture_s", 0.0) + getattr(w, "compile_s", 0.0) for w in self._wrappers if w)

    def _prompt_embeds(self, prompt: str):
        """(prompt, negative prompt) text-encoder outputs, computed once per prompt (the encoder is a ViT-H)."""
        if prompt not in self._embeds:
            if len(self._embeds) >= 16:
                self._embeds.pop(next(iter(self._embeds)))
            self._embeds[prompt] = self.pipe.encode_prompt(prompt, self.pipe._execution_device, 1, self.guidance > 1,
                                                           NEGATIVE_PROMPT)
        return self._embeds[prompt]

    def outpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str = "", seed: int = 0) -> np.ndarray:
        import torch
        from PIL import Image

        h, w = image.shape[:2]
        img = np.clip(image, 0, 1).astype(np.float32)
        hole = mask.astype(bool)
        pil_img = Image.fromarray((img * 255 + 0.5).astype(np.uint8)).resize((self.size, self.size), Image.BICUBIC)
        pil_mask = Image.fromarray(hole.astype(np.uint8) * 255).resize((self.size, self.size), Image.NEAREST)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        positive, negative = self._prompt_embeds(prompt or "a landscape photograph")
        if self._compile is not None:
            self._compile.poll()  # between calls: adopt the compiled kernels once they are ready
        self.last_kernels = self.kernels
        out = self.pipe(prompt_embeds=positive, negative_prompt_embeds=negative, image=pil_img,
                        mask_image=pil_mask, height=self.size, width=self.size, num_inference_steps=self.steps,
                        guidance_scale=self.guidance, generator=gen, output_type="np").images[0]
        if (self.accel == "auto" and self._compile is None and self._skipped is None
                and all(w.example is not None for w in self._wrappers)):
            free = torch.cuda.mem_get_info(self.pipe.device)[0]
            if free < COMPILE_MIN_FREE:  # the compile's own activations must not push a job out of memory
                self._skipped = (f"skipped: {free / 2**30:.1f} GiB free on the GPU, the compile wants "
                                 f"{COMPILE_MIN_FREE / 2**30:.0f} GiB")
            else:
                from .accel import BackgroundCompile

                self._compile = BackgroundCompile(self._wrappers)  # each wrapper has seen its shapes: compile them
        out = cv2.resize(out.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA if w < self.size else cv2.INTER_CUBIC)
        return np.where(hole[..., None], np.clip(out, 0, 1), img).astype(np.float32)


def _timesteps_on_host(scheduler) -> None:
    """Keep the scheduler's timesteps on the CPU whatever device the pipeline asks for: its ``step`` indexes its
    alpha tables with the timestep and compares it with 0, which on a CUDA timestep waits for the GPU every step.
    The UNet wrappers move the value to the device with a fill kernel instead."""
    set_timesteps = scheduler.set_timesteps

    def on_host(num_inference_steps=None, device=None, *args, **kwargs):
        return set_timesteps(num_inference_steps, None, *args, **kwargs)

    scheduler.set_timesteps = on_host
