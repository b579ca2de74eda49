"""Loading pretrained weights from disk only: a local folder or the local Hugging Face cache, never the network."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ModelUnavailable


def download_command(name: str) -> str:
    """The command that fetches a model's weights once into the Hugging Face cache (the README's)."""
    return f".venv/bin/hf download {name}"


def load_local(loader: Callable[..., Any], name_or_path: str, what: str, **kwargs) -> Any:
    """Call ``loader(name_or_path, local_files_only=True, **kwargs)`` (a ``from_pretrained``), mapping "not on
    this machine" to ``ModelUnavailable`` with a message saying where to put the weights.

    ``name_or_path`` is a folder written by ``save_pretrained`` or a Hugging Face repo id already in the cache.
    """
    p = Path(name_or_path).expanduser()
    looks_like_path = p.is_absolute() or name_or_path.startswith(".") or p.exists()
    if looks_like_path and not p.is_dir():
        raise ModelUnavailable(
            f"{what}: the folder {str(p)!r} does not exist. Point the model setting at a folder written by "
            f"save_pretrained (config.json + weights), or set it to 'builtin'.")
    try:
        return loader(str(p) if looks_like_path else name_or_path, local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:  # transformers/diffusers raise OSError (ValueError in places) when files are missing
        raise ModelUnavailable(
            f"{what}: weights {name_or_path!r} are not on this machine and the backend never downloads them. "
            f"Either fetch them once yourself (`{download_command(name_or_path)}`, the CLI of huggingface_hub, puts "
            f"them in the Hugging Face cache, ~/.cache/huggingface), or save a model folder and set the model setting to its path, or "
            f"set it to 'builtin' for the built-in fallback. ({type(exc).__name__}: {exc})") from exc


def find_local(name_or_path: str) -> Path | None:
    """The folder that holds ``name_or_path``'s weights on this machine (a ``save_pretrained`` folder, or the
    repo's snapshot in the local Hugging Face cache), or None. Looks only; loads and downloads nothing."""
    p = Path(name_or_path).expanduser()
    if p.is_absolute() or name_or_path.startswith(".") or p.exists():
        folder = p if p.is_dir() else None
    else:
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(name_or_path, local_files_only=True))
        except (OSError, ValueError):  # not in the cache (LocalEntryNotFoundError), or not a valid repo id
            folder = None
    if folder is None or not any(folder.rglob("*.safetensors")) and not any(folder.rglob("*.bin")):
        return None
    return folder


def torch_device(device: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
