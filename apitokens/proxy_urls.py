from __future__ import annotations

from django.urls import path

from . import proxy

app_name = "proxy"

urlpatterns = [
    path("<path:path>", proxy.proxy, name="proxy"),
]
