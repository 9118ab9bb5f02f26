"""Reading the JSON objects dawnet writes (histories, LR-finder results) from a path or from the text itself."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["load_json"]


def load_json(path_or_text: str | os.PathLike) -> Any:
    """Parse ``path_or_text``: JSON text when it starts with ``{`` (after spaces), else the file at that path."""
    text = str(path_or_text)
    if not text.lstrip().startswith("{"):
        text = Path(path_or_text).read_text()
    return json.loads(text)
