"""Command line: ``python -m cloudflare_sandbox [--host H] [--port P] [--db PATH] [--enable-control] …``.

Every option can also come from an environment variable (``CF_SANDBOX_HOST``, ``CF_SANDBOX_PORT``,
``CF_SANDBOX_DB``, ``CF_SANDBOX_ENABLE_CONTROL``, ``CF_SANDBOX_ACCESS_TTL``, ``CF_SANDBOX_ISSUER``,
``CF_SANDBOX_QUIET``, ``CF_SANDBOX_SETTINGS``) so process managers can configure it without flags;
flags win over the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .runtime import SettingsError, validate_settings
from .server import SandboxApp, SandboxHTTPServer


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer") from None


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with environment-variable defaults."""
    parser = argparse.ArgumentParser(
        prog="python -m cloudflare_sandbox",
        description="Local stand-in for Cloudflare's OAuth server and API v4 (development and tests only).",
    )
    parser.add_argument("--host", default=os.environ.get("CF_SANDBOX_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port",
        type=int,
        default=_env_int("CF_SANDBOX_PORT", 8788),
        help="0 picks a free port (the start line shows it)",
    )
    parser.add_argument(
        "--db",
        default=os.environ.get("CF_SANDBOX_DB", os.path.join("var", "cloudflare-sandbox.sqlite3")),
        help="SQLite file (created with its directory); default var/cloudflare-sandbox.sqlite3",
    )
    parser.add_argument(
        "--enable-control",
        action="store_true",
        default=_env_flag("CF_SANDBOX_ENABLE_CONTROL"),
        help="serve the test-only control endpoint under /__sandbox__/",
    )
    parser.add_argument(
        "--access-ttl",
        type=int,
        default=_env_int("CF_SANDBOX_ACCESS_TTL", None),
        help="access token lifetime in seconds (default 3600)",
    )
    parser.add_argument(
        "--issuer", default=os.environ.get("CF_SANDBOX_ISSUER"), help="issuer URL (default http://HOST:PORT)"
    )
    parser.add_argument(
        "--settings",
        default=os.environ.get("CF_SANDBOX_SETTINGS"),
        help="initial settings as JSON, e.g. '{\"send_iss\": false}'",
    )
    parser.add_argument(
        "--quiet", action="store_true", default=_env_flag("CF_SANDBOX_QUIET"), help="do not log requests"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start the sandbox and serve until interrupted."""
    args = build_parser().parse_args(argv)
    settings: dict[str, Any] = {}
    if args.settings:
        try:
            loaded = json.loads(args.settings)
        except ValueError:
            raise SystemExit("--settings must be a JSON object") from None
        if not isinstance(loaded, dict):
            raise SystemExit("--settings must be a JSON object")
        settings.update(loaded)
    if args.access_ttl is not None:
        settings["access_ttl"] = args.access_ttl
    try:
        validate_settings(settings)
    except SettingsError as exc:
        raise SystemExit(f"invalid setting: {exc}") from None

    app = SandboxApp(db_path=args.db, control_enabled=args.enable_control, settings=settings, quiet=args.quiet)
    try:
        server = SandboxHTTPServer((args.host, args.port), app)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    port = server.server_address[1]
    host = args.host if ":" not in args.host else f"[{args.host}]"
    base = f"http://{host}:{port}"
    app.issuer = (args.issuer or base).rstrip("/")

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    state = "control endpoint enabled" if args.enable_control else "control endpoint disabled"
    print(f"Cloudflare sandbox listening on {base} ({state})", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
