"""axe-core in the test browser: WCAG 2.0, 2.1 and 2.2 level A and AA rules, failing on any violation.

axe-core comes bundled in `axe-playwright-python` (pinned in requirements-dev.txt): nothing is
downloaded at run time.
"""

from __future__ import annotations

from axe_playwright_python.sync_playwright import Axe
from django.conf import settings
from django.test import Client

WCAG_AA_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": WCAG_AA_TAGS}, "resultTypes": ["violations"]}

_axe = Axe()


def violations(page) -> list[str]:
    """One readable line per violating element: rule, impact, target and axe's summary of the fix."""
    results = _axe.run(page, options=AXE_OPTIONS).response
    lines = []
    for violation in results["violations"]:
        for node in violation["nodes"]:
            target = " ".join(str(t) for t in node.get("target", []))
            summary = (node.get("failureSummary") or "").replace("\n", " ")
            lines.append(f"{violation['id']} ({violation.get('impact')}): {target} | {summary}")
    return lines


def assert_accessible(page, what: str) -> None:
    found = violations(page)
    assert not found, f"{what} ({page.url}) fails WCAG 2.2 AA:\n  " + "\n  ".join(found)


def sign_in(page, live_server, user, **session_values) -> None:
    """Open a session for `user` in the browser (as if they had signed in), with extra session values."""
    client = Client()
    client.force_login(user)
    if session_values:
        session = client.session
        session.update(session_values)
        session.save()
    page.context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )


def anonymous_session(page, live_server, **session_values) -> None:
    """A signed-out browser session holding `session_values` (such as a consent result)."""
    from importlib import import_module

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store.update(session_values)
    store.save()
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": store.session_key, "url": live_server.url}]
    )
