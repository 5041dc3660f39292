"""The eliza dialect (see reference/dialects.md); routes added by its module."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
