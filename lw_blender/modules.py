"""Import the listed submodules of a package, skipping ones that do not exist yet (registration lists)."""

import importlib


def import_listed(package: str, names: list[str]) -> list:
    out = []
    for name in names:
        try:
            out.append(importlib.import_module(f"{package}.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{name}":
                raise
    return out
