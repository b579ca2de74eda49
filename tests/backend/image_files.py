"""Image files made by hand for the readers' tests (a header that claims one size over data of another)."""

from __future__ import annotations

import struct
import zlib


def png_header_only(path, width, height):
    """A PNG whose header claims ``width`` x ``height`` pixels, with one tiny (wrong) data chunk."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path
