"""Image files a user hands us: the size in the header is judged before anything is decoded.

Pillow reads a header without decoding the pixels, so a file claiming a huge image (a decompression bomb, or a
truncated file with a corrupt header) is refused with one line instead of being allocated by OpenCV."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import InvalidInput, NotFound

MAX_IMAGE_PIXELS = 120_000_000  # 11k x 11k, above any camera's photo; the world works at <= 2048 px


def check_image_header(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header of the image file ``path`` ((0, 0) for formats Pillow does not know, such as
    EXR: OpenCV may still read them). Raises ``NotFound`` / ``InvalidInput`` for a missing, folder, empty,
    unreadable or over-large (> ``MAX_IMAGE_PIXELS``) file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise InvalidInput(f"image {str(path)!r} is a folder; choose an image file (PNG or JPEG)")
    if not path.is_file():
        raise NotFound(f"image {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise InvalidInput(f"image {str(path)!r} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # the size is judged below, not by Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except UnidentifiedImageError:
        return 0, 0
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"image {str(path)!r} cannot be read: {str(exc).splitlines()[0][:200]}") from None
    if w * h > MAX_IMAGE_PIXELS:
        raise InvalidInput(f"image {str(path)!r} says it is {w}x{h} pixels, more than {MAX_IMAGE_PIXELS:,} "
                           "LivingWorld reads; scale it down first")
    return w, h
