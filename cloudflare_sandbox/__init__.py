"""A local stand-in for Cloudflare's OAuth server (Ory Hydra-like) and a subset of API v4.

Run it with ``python -m cloudflare_sandbox --port 8788``. The portal reaches it only through its
configured URLs, exactly as it reaches the real Cloudflare; see ``README.md`` in this package for
what is emulated, where each behaviour comes from, and the test-only control endpoint.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "1.0.0"
