"""Tests of the Cloudflare sandbox itself."""

from __future__ import annotations
