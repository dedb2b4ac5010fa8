"""Where fetched weights live: $POSE_CACHE_DIR, else the XDG cache directory (~/.cache/hrnet-pose)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CACHE_ENV = "POSE_CACHE_DIR"
XDG_CACHE_ENV = "XDG_CACHE_HOME"
APP_DIR = "hrnet-pose"
CHECKPOINTS_DIR = "checkpoints"


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """$POSE_CACHE_DIR, else $XDG_CACHE_HOME/hrnet-pose, else ~/.cache/hrnet-pose."""
    explicit = environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = environ.get(XDG_CACHE_ENV)
    # The XDG spec says a relative $XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / APP_DIR


def cached_checkpoint(cache_dir: Path, file_name: str) -> Path:
    """The cache path of a checkpoint file; its name is the publisher's, so a mirror fills the same entry."""
    return cache_dir / CHECKPOINTS_DIR / file_name
