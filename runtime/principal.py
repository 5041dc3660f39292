"""Who calls the runtime: sessions belong to the principal that created them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who is calling: sessions belong to the principal that created them."""

    id: str
    admin: bool = False


LOCAL_PRINCIPAL = Principal("local")
