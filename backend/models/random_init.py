"""Randomly initialised models of the real provider architectures, written in the ``save_pretrained`` layout.

The providers load these folders exactly as they load downloaded weights (``TransformersDepth``,
``TransformersSegmentation``, ``DiffusersInpaint``), so tests exercise the real loading and inference code
without weights, and ``bench/world_step_gpu.py`` times one expansion step with the full-size architectures
(timing needs the architecture, not trained values). Two sizes each:

- ``"tiny"``: a few thousand parameters, seconds on a CPU (tests);
- the real model's size: Depth Anything V2 Large (``"large"``, DINOv2 ViT-L/14 backbone, DPT head as in
  ``depth-anything/Depth-Anything-V2-Large-hf``), SegFormer-B0 on ADE20k (``"b0"``, 150 classes), and Stable
  Diffusion 2 inpainting (``"full"``: the 9-channel UNet, the KL autoencoder, the OpenCLIP ViT-H text encoder
  and the DDIM scheduler of ``stabilityai/stable-diffusion-2-inpainting``).

The tokenizer is a byte-level CLIP BPE with no merges (every character is a token): the real vocabulary is not
on this machine, and tokenising a prompt costs nothing next to the text encoder, whose full 49408-entry
embedding table is kept.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Literal


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _save(model, processor, path: str | Path) -> Path:
    path = Path(path)
    model.eval().save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_depth_anything(path: str | Path, size: Literal["tiny", "large"] = "tiny", seed: int = 0) -> Path:
    """A relative Depth Anything V2 with its ``DPTImageProcessor`` (518 px, keep aspect, multiple of 14)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    _seed(seed)
    if size == "tiny":
        backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                                image_size=56, patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
        cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                  fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type="relative")
        proc = DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=False, ensure_multiple_of=14,
                                 do_pad=False)
    elif size == "large":
        backbone = Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                                image_size=518, patch_size=14, out_indices=[5, 12, 18, 24], reshape_hidden_states=False,
                                layerscale_value=1.0, mlp_ratio=4)
        cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=1024,
                                  neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256, head_hidden_size=32,
                                  depth_estimation_type="relative")
        proc = DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                 do_pad=False, resample=3, image_mean=[0.485, 0.456, 0.406],
                                 image_std=[0.229, 0.224, 0.225])
    else:
        raise ValueError(f"size must be 'tiny' or 'large', not {size!r}")
    return _save(DepthAnythingForDepthEstimation(cfg), proc, path)


def save_segformer(path: str | Path, size: Literal["tiny", "b0"] = "tiny", seed: int = 0) -> Path:
    """A SegFormer whose label names include the ADE20k sky and water classes the provider maps."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    _seed(seed)
    if size == "tiny":
        labels = {0: "wall", 1: "sky", 2: "tree", 3: "water", 4: "sea"}
        cfg = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                              patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
                              decoder_hidden_size=16, id2label=labels, label2id={v: k for k, v in labels.items()})
        proc = SegformerImageProcessor(size={"height": 64, "width": 64})
    elif size == "b0":
        named = {1: "building", 2: "sky", 4: "tree", 21: "water", 26: "sea", 60: "river", 128: "lake"}
        labels = {i: named.get(i, f"class{i}") for i in range(150)}
        cfg = SegformerConfig(hidden_sizes=[32, 64, 160, 256], decoder_hidden_size=256, num_labels=150,
                              id2label=labels, label2id={v: k for k, v in labels.items()})
        proc = SegformerImageProcessor(size={"height": 512, "width": 512})
    else:
        raise ValueError(f"size must be 'tiny' or 'b0', not {size!r}")
    return _save(SegformerForSemanticSegmentation(cfg), proc, path)


def _clip_tokenizer(max_length: int = 77):
    """CLIP's byte-level BPE over the 256 byte symbols (and their word-final forms), no merges."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tok = CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=max_length,
                            pad_token="<|endoftext|>")
    return tok, vocab


def save_sd2_inpainting(path: str | Path, size: Literal["tiny", "full"] = "tiny", seed: int = 0) -> Path:
    """A ``StableDiffusionInpaintPipeline`` folder (unet, vae, text_encoder, tokenizer, scheduler) in float32."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    _seed(seed)
    tokenizer, vocab = _clip_tokenizer()
    special = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
               "pad_token_id": vocab["<|endoftext|>"]}
    if size == "tiny":
        unet = UNet2DConditionModel(sample_size=8, in_channels=9, out_channels=4, block_out_channels=(16, 32),
                                    layers_per_block=1, norm_num_groups=8, cross_attention_dim=16,
                                    attention_head_dim=(2, 4), use_linear_projection=True,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=1, norm_num_groups=8, sample_size=64)
        text = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_attention_heads=2,
                              num_hidden_layers=2, max_position_embeddings=77, projection_dim=16, **special)
    elif size == "full":
        # stabilityai/stable-diffusion-2-inpainting: unet/, vae/ and text_encoder/ config.json
        unet = UNet2DConditionModel(sample_size=64, in_channels=9, out_channels=4,
                                    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                                    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                    use_linear_projection=True)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2, sample_size=512)
        text = CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                              num_hidden_layers=23, max_position_embeddings=77, projection_dim=512, hidden_act="gelu",
                              **special)
    else:
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    pipe = StableDiffusionInpaintPipeline(vae=vae.eval(), text_encoder=CLIPTextModel(text).eval(), tokenizer=tokenizer,
                                          unet=unet.eval(), scheduler=scheduler, safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    path = Path(path)
    pipe.save_pretrained(path)
    return path
