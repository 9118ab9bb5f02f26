"""The one error the inspector raises for a request it refuses, with the HTTP status it answers with."""

from __future__ import annotations

__all__ = ["InspectorError"]


class InspectorError(ValueError):
    """A request the inspector refuses; ``status`` is the HTTP status the app answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
