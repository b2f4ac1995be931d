"""The event export is safe to open in a spreadsheet: every cell, not only the message."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from agencyportal.exports import csv_cell
from connections.models import GrantEvent
from tests import factories


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_it_neutralises_a_cell_that_a_spreadsheet_would_evaluate(lead):
    assert csv_cell(f"{lead}2+5") == f"'{lead}2+5"


def test_it_leaves_ordinary_text_and_empty_cells_alone():
    assert csv_cell("Acme Corp") == "Acme Corp" and csv_cell(None) == "" and csv_cell(7) == "7"


def test_the_event_export_neutralises_the_email_client_and_actor_columns(admin_client):
    client = factories.ClientFactory(name="+SUM(A1:A9)")
    grant = factories.GrantFactory(client=client, cf_user_email="=2+5@evil.example")
    actor = factories.StaffFactory(username="@evil")
    factories.GrantEventFactory(grant=grant, client=client, actor=actor, message="-1+1")
    ids = list(GrantEvent.objects.values_list("pk", flat=True))
    response = admin_client.post(
        reverse("admin:connections_grantevent_changelist"), {"action": "export_csv", "_selected_action": ids}
    )
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    cells = [cell for row in rows[1:] for cell in row]
    assert "'=2+5@evil.example" in cells and "'+SUM(A1:A9)" in cells and "'@evil" in cells and "'-1+1" in cells
    assert not any(cell[:1] in "=+-@\t\r" for cell in cells if cell)
