"""The Celery app. Settings live in Django settings under the CELERY_ namespace.

Run exactly one beat: the periodic tasks below only *find* due work in the database; the
per-grant tasks are single-flight, so a duplicate beat or a duplicate message is harmless,
but a second beat doubles the sweeps for nothing.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agencyportal.settings")

app = Celery("agencyportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The periodic schedule, defined once. Each entry only claims due rows; see connections/tasks.py.
app.conf.beat_schedule = {}
