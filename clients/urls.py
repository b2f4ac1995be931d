from __future__ import annotations

app_name = "clients"

urlpatterns: list = []
