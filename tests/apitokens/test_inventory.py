"""Inventory: the admin form, the CSV import (command and upload with a preview), encryption."""

from __future__ import annotations

import io
import secrets

import pytest
from django.core.management import call_command
from django.db import connection

from apitokens import services
from apitokens.models import ApiToken, ApiTokenEvent
from tests import factories

pytestmark = pytest.mark.django_db


def fake_token() -> str:
    return "cfut_" + secrets.token_urlsafe(30)


def _csv(rows: list[list[str]]) -> str:
    lines = ["client,name,token,purpose,account_id,permissions,notes"]
    lines += [",".join(r) for r in rows]
    return "\n".join(lines) + "\n"


def _stored(column: str = "token") -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM apitokens_apitoken")  # noqa: S608 - fixed column
        return " ".join(str(r[0]) for r in cursor.fetchall())


def test_it_imports_valid_rows_and_reports_each_bad_row_with_its_reason(acme, tmp_path):
    factories.ClientFactory(slug="globex")
    good, internal, dup = fake_token(), fake_token(), fake_token()
    text = _csv(
        [
            ["acme", "deploy bot", good, "customer", "", "DNS Write; Zone Read", "from the wiki"],
            ["globex", "ci", internal, "internal", "", "", ""],
            ["nobody", "x", fake_token(), "customer", "", "", ""],
            ["acme", "short", "abc", "customer", "", "", ""],
            ["acme", "odd", fake_token(), "customer", "", "Make Coffee", ""],
            ["acme", "again", good, "customer", "", "", ""],
            ["acme", "acct", "cfat_" + secrets.token_urlsafe(30), "customer", "", "", ""],
            ["acme", "bad purpose", dup, "both", "", "", ""],
        ]
    )
    path = tmp_path / "tokens.csv"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    call_command("import_api_tokens", str(path), stdout=out, stderr=err)

    assert ApiToken.objects.count() == 2
    deploy = ApiToken.objects.get(name="deploy bot")
    assert deploy.purpose == "customer" and deploy.declared_permissions == ["DNS Write", "Zone Read"]
    assert ApiToken.objects.get(name="ci").purpose == "internal"
    errors = err.getvalue()
    assert "line 4: No such client." in errors
    assert "line 5: The token is not shaped like a Cloudflare API token" in errors
    assert "line 6: 'Make Coffee' is not a permission group" in errors
    assert "line 7: The same token appears twice in this file." in errors
    assert "line 8: An account-owned token (cfat_…) needs the ID of the account" in errors
    assert "line 9: Purpose must be" in errors
    # Never a token in the output, and only ciphertext in the database.
    for secret in (good, internal, dup):
        assert secret not in out.getvalue() + errors
        assert secret not in _stored()
    assert deploy.token == good and deploy.token_fp == services.crypto.fingerprint(good)
    assert ApiTokenEvent.objects.filter(kind="imported").count() == 2


def test_a_file_with_a_missing_column_imports_nothing(acme, tmp_path):
    path = tmp_path / "tokens.csv"
    path.write_text(f"client,name,token\nacme,x,{fake_token()}\n")
    err = io.StringIO()
    with pytest.raises(Exception, match="No valid rows"):
        call_command("import_api_tokens", str(path), stdout=io.StringIO(), stderr=err)
    assert "Missing column(s): purpose" in err.getvalue()
    assert ApiToken.objects.count() == 0


def test_an_import_that_fails_half_way_writes_nothing(acme, monkeypatch):
    rows = services.csv_preview(
        _csv(
            [["acme", "a", fake_token(), "customer", "", "", ""]] * 1
            + [["acme", "b", fake_token(), "customer", "", "", ""]]
        )
    )
    calls = {"n": 0}
    real = services._create

    def boom(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(services, "_create", boom)
    with pytest.raises(RuntimeError):
        services.csv_import(rows, created_by=None)
    assert ApiToken.objects.count() == 0


def test_the_admin_upload_previews_each_row_then_imports_the_valid_ones(admin_client, acme):
    good = fake_token()
    text = _csv([["acme", "deploy", good, "customer", "", "", ""], ["acme", "broken", "nope", "customer", "", "", ""]])
    upload = io.BytesIO(text.encode())
    upload.name = "tokens.csv"
    preview = admin_client.post("/admin/apitokens/apitoken/import/", {"file": upload})
    assert preview.status_code == 200
    body = preview.content.decode()
    assert "will be imported" in body and "not shaped like a Cloudflare API token" in body
    assert good not in body and ApiToken.objects.count() == 0
    assert good not in str(dict(admin_client.session))  # held encrypted until the confirmation

    done = admin_client.post("/admin/apitokens/apitoken/import/", {"confirm": "1"})
    assert done.status_code == 302
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["deploy"]
    assert "apitokens_csv_preview" not in admin_client.session


def test_the_admin_form_records_a_token_that_is_never_shown_again(admin_client, acme):
    secret = fake_token()
    response = admin_client.post(
        "/admin/apitokens/apitoken/add/",
        {"client": acme.pk, "name": "wordpress plugin", "secret": secret, "purpose": "customer", "notes": ""},
    )
    assert response.status_code == 302, response.content[:2000]
    token = ApiToken.objects.get()
    assert token.created_by is not None and token.token_fp
    for url in (
        "/admin/apitokens/apitoken/",
        f"/admin/apitokens/apitoken/{token.pk}/change/",
        "/admin/apitokens/apitoken/board/",
        "/admin/apitokens/apitoken/board/export/",
    ):
        page = admin_client.get(url)
        assert page.status_code == 200, url
        assert secret not in page.content.decode()
    assert token.fingerprint_short in admin_client.get("/admin/apitokens/apitoken/").content.decode()


def test_the_admin_form_refuses_a_token_already_stored(admin_client, acme):
    secret = fake_token()
    services.api_token_create(client=acme, name="one", token=secret, purpose="customer", created_by=None)
    response = admin_client.post(
        "/admin/apitokens/apitoken/add/",
        {"client": acme.pk, "name": "two", "secret": secret, "purpose": "customer"},
        follow=True,
    )
    assert "This token is already in the portal." in response.content.decode()
    assert ApiToken.objects.count() == 1


def test_a_token_cannot_be_looked_up_by_its_value_in_the_admin(admin_client, acme):
    services.api_token_create(client=acme, name="one", token=fake_token(), purpose="customer", created_by=None)
    assert admin_client.get("/admin/apitokens/apitoken/?token__startswith=cfut").status_code == 400
