"""Writes and side effects for connections, one module per flow.

- `events`: the audit trail and the alert outbox (shared by every flow).
- `consent`: authorization requests, the OAuth callback, grant creation and replacement.
- `disconnect`: disconnect and revocation at Cloudflare.
- `refresh`: the single path to the token endpoint for a grant.
- `health`: scheduled checks, zone sync, drift detection.
- `alerts`: delivery of alerts by email and webhook.
"""
