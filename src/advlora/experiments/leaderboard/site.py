"""The leaderboard as a static site: ``index.html``, its stylesheet and script (package data, copied as they
are) and ``data.js`` (the board's tables as one ``window.LEADERBOARD = {...}`` assignment).

The page fetches nothing: the data is a script beside it (a browser opening ``index.html`` from disk may not
read a JSON file with ``fetch``, but loads a script), and the tables, filters and plots are drawn by
``leaderboard.js`` without any library.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from advlora.io import atomic_write_text

ASSETS = Path(__file__).with_name("assets")
#: the files of a site, copied from ``ASSETS``, and the one written from the board
STATIC = ("index.html", "leaderboard.js", "leaderboard.css")
DATA = "data.js"


def data_script(data: dict[str, Any]) -> str:
    """``data`` as the script the page loads (JSON, with ``</`` escaped so no reader takes it for markup)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).replace("</", "<\\/")
    return f"window.LEADERBOARD = {text};\n"


def write_site(data: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write the site of ``data`` (``board_data``) into ``folder`` (which the caller made); returns its files."""
    folder = Path(folder)
    written = []
    for name in STATIC:
        shutil.copyfile(ASSETS / name, folder / name)
        written.append(folder / name)
    atomic_write_text(folder / DATA, data_script(data))
    written.append(folder / DATA)
    return written


__all__ = ["ASSETS", "DATA", "STATIC", "data_script", "write_site"]
