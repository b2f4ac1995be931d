"""In a real browser, with a real worker: staff change a DNS record, run a bulk purge and watch its
progress; the client then sees both on the portal."""

from __future__ import annotations

import re

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from operations.gate import Actor
from operations.services import action_run
from tests import factories
from tests.changes.conftest import zoned_client
from tests.faults.conftest import engine_settings, workers  # noqa: F401 - fixtures
from tests.sandbox_grants import register_app, unique_label

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"


def _code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"


def test_staff_edit_a_record_and_run_a_bulk_purge_and_the_client_sees_both(
    live_server,
    new_page,
    settings,
    cf_sandbox,
    workers,  # noqa: F811
):
    from tests.operations.conftest import OPTIONAL

    settings.STAFF_OTP_REQUIRED = True
    staff = factories.SuperuserFactory(username="ops-bulk", password=PASSWORD)
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    app = register_app(cf_sandbox, name="Bulk browser app", optional=tuple(OPTIONAL))
    acme = zoned_client(cf_sandbox, slug=f"web-{unique_label()}", zones=8, app=app)
    owner = factories.ClientMemberFactory(
        client=acme.client, user=factories.UserFactory(username=f"owner@{acme.client.slug}.example")
    ).user
    zone = acme.zones[0]
    made = action_run(
        actor=Actor(user=staff),
        action_id="dns.record.create",
        client=acme.client,
        zone=zone,
        inputs={"type": "A", "name": "shop", "content": "192.0.2.10"},
    )
    assert made.succeeded
    record_id = made.result["record_id"]
    workers.start(concurrency=1)

    page = new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto(f"{live_server.url}/admin/")
    page.fill("input[name=username]", "ops-bulk")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=otp_token]", _code(device))
    page.click("input[type=submit]")
    page.wait_for_selector("#fleet-dashboard")

    # 1. Edit a DNS record: form → before/after confirmation → done.
    page.goto(f"{live_server.url}/admin/operations/actionrecord/zone/{zone.pk}/dns/")
    page.click(f'tr[data-record="{record_id}"] >> text=Edit')
    page.fill("input[name=content]", "198.51.100.20")
    page.click("text=Review the change")
    page.wait_for_selector("#before-after")
    assert page.locator("#before-after").inner_text().count("198.51.100.20") == 1
    page.click("#confirm")
    page.wait_for_selector(f'tr[data-record="{record_id}"] >> text=198.51.100.20')

    # 2. A bulk purge on the client's zones, from the zones list.
    cf_sandbox.set_faults(latency_ms=300, latency_endpoints=["api"])
    page.goto(f"{live_server.url}/admin/clients/zone/?account__client__id__exact={acme.client.pk}")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "start_bulk_change")
    page.click("button[name=index]")
    page.wait_for_selector("#bulk-form")
    # Only the chosen plan's fields show.
    assert page.is_visible("#plan-dns-record-create") and not page.is_visible("#plan-cache-purge")
    page.check("input[name=plan][value='cache.purge']")
    assert page.is_visible("#plan-cache-purge")
    assert not page.is_visible("#plan-dns-record-create") and not page.is_visible("#plan-dns-records-set-content")
    page.check("input[name=purge_mode][value=everything]")
    page.click("#bulk-dry-run")
    page.wait_for_selector("#change-confirm", timeout=30_000)  # the page reloads when the dry run is done
    assert page.locator("#change-confirm").inner_text() == "Run on 8 zones"
    page.click("#change-confirm")
    # Live progress: the bar moves while the worker runs the items (300 ms each at Cloudflare).
    seen: set[str] = set()
    for _ in range(200):
        text = page.locator("#change-done-text").inner_text()
        if text:
            seen.add(text)
        if page.locator("#change-status").inner_text() == "Finished":
            break
        page.wait_for_timeout(150)
    assert page.locator("#change-status").inner_text() == "Finished"
    partial = [t for t in seen if (m := re.match(r"(\d+) of 8", t)) and 0 < int(m.group(1)) < 8]
    assert partial, f"no intermediate progress seen: {seen}"
    assert page.locator('td.item-status[data-status="done"]').count() == 8
    cf_sandbox.clear_faults()

    # 3. The client sees what the agency changed, in plain words.
    client_page = new_page()
    client_page.goto(f"{live_server.url}/portal/login/")
    client_page.fill("input[name=username]", owner.username)
    client_page.fill("input[name=password]", PASSWORD)
    client_page.click("button[type=submit]")
    section = client_page.locator("text=What the agency changed in your Cloudflare account")
    section.wait_for()
    text = client_page.inner_text("body")
    assert "198.51.100.20" in text
    assert f"Cleared Cloudflare's whole cache for {acme.zones[-1].name}" in text
    assert not problems, problems
