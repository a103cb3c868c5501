"""Identity: which user each event belongs to, and which account each user joins."""

from upsignal.identity.domains import account_domain, registrable_domain
from upsignal.identity.resolve import resolve_accounts

__all__ = ["account_domain", "registrable_domain", "resolve_accounts"]
