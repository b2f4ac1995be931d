"""Delivery of alerts to staff (email and a signed webhook)."""

from __future__ import annotations


def alert_deliver(*, alert_id: int) -> None:
    raise NotImplementedError("alert delivery is built with the background engine")
