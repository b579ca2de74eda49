"""The backend service: HTTP JSON API over a SQLite job store and a one-at-a-time job worker."""

from .app import create_app

__all__ = ["create_app"]
