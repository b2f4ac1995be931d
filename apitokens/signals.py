"""A new grant for a client being migrated: link it and compare it with the token (parity).

A receiver rather than a call from the consent callback: connections knows nothing of API
tokens. The comparison reads the database only; it runs after the grant's transaction commits,
when its accounts and zones are stored.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from connections.models import Grant


@receiver(post_save, sender=Grant, dispatch_uid="apitokens_grant_saved")
def grant_saved(sender, instance: Grant, created: bool, **kwargs) -> None:
    if not created:
        return
    client_id = instance.client_id

    def compare() -> None:
        from . import services
        from .models import ApiToken

        for token in ApiToken.objects.filter(
            client_id=client_id, state__in=[ApiToken.State.INVITED, ApiToken.State.CONNECTED]
        ).defer("token"):
            services.parity_check(token=token)

    transaction.on_commit(compare)
