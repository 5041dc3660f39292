"""Who calls the runtime: sessions belong to the principal that created them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who is calling: sessions belong to the principal that created them."""

    id: str
    admin: bool = False

    def sees(self, owner_id: str) -> bool:
        """Whether a session owned by ``owner_id`` is visible to this principal
        (its own, or any for an admin)."""
        return self.admin or owner_id == self.id


LOCAL_PRINCIPAL = Principal("local")
