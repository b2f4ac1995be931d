"""Service keys: created in the admin, shown once, stored hashed, limited, expiring, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from operations.catalogue import CATALOGUE

from .models import ServiceKey

KEY_PREFIX = "apk_"


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def service_key_create(
    *, name: str, clients, actions: list[str], expires_at: datetime, created_by
) -> tuple[ServiceKey, str]:
    """Create a key; returns it with the plaintext, which is never stored or shown again."""
    unknown = [a for a in actions if a not in CATALOGUE]
    if unknown:
        raise ValidationError(f"Unknown action(s): {', '.join(unknown)}.")
    if not actions:
        raise ValidationError("Choose at least one action the key may run.")
    if expires_at <= timezone.now():
        raise ValidationError("The expiry must be in the future.")
    prefix = secrets.token_hex(4)
    raw = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        key = ServiceKey.objects.create(
            name=name,
            prefix=prefix,
            key_hash=_hash(raw),
            actions=list(actions),
            expires_at=expires_at,
            created_by=created_by,
        )
        key.clients.set(clients)
    return key, raw


def service_key_authenticate(raw: str) -> ServiceKey | None:
    """The usable key for this value, or None (unknown, wrong, expired or revoked)."""
    if not raw.startswith(KEY_PREFIX) or raw.count("_") < 2:
        return None
    prefix = raw[len(KEY_PREFIX) :].split("_", 1)[0]
    key = ServiceKey.objects.filter(prefix=prefix).prefetch_related("clients").first()
    if key is None or not hmac.compare_digest(key.key_hash, _hash(raw)) or not key.is_usable():
        return None
    ServiceKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    return key


def service_key_revoke(*, key: ServiceKey) -> None:
    ServiceKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
