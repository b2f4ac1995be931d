"""CSV exports from the admin: every cell neutralised against spreadsheet formulas."""

from __future__ import annotations


def csv_cell(value: object) -> str:
    """One exported cell, safe to open in a spreadsheet (CSV injection, OWASP).

    A leading =, +, -, @, tab or carriage return makes a spreadsheet evaluate the cell; a quote in
    front keeps it text. Applied to every cell, not only free text: client names, emails, zone names
    and Cloudflare's messages all come from outside.
    """
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_row(values) -> list[str]:
    return [csv_cell(v) for v in values]
