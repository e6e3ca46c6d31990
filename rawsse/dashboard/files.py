"""Reading the dashboard's shipped files, once, at startup."""

from __future__ import annotations

from importlib import resources

from rawsse.core.static import CONTENT_TYPES, StaticFiles


def load_dashboard() -> StaticFiles:
    folder = resources.files("rawsse.dashboard") / "static"
    return StaticFiles({name: (folder / name).read_bytes() for name in CONTENT_TYPES})
