"""Salesforce OAuth sessions and REST calls for the Salesforce destination.

Three OAuth 2.0 flows get a session: client credentials, JWT bearer and
username-password, each a POST to ``{login_url}/services/oauth2/token``. When
a request gets 401 ``INVALID_SESSION_ID`` because the session expired or was
revoked, the session is renewed once and the request sent again.

simple-salesforce builds its URLs as ``https://{domain}.salesforce.com`` and
so cannot reach a My Domain on another host or a local test server; upsignal
sends the requests with httpx and uses simple-salesforce for quoting SOQL.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from upsignal.alerts.destination import Failed, Outcome, Retry
from upsignal.alerts.http import HttpSender, classify_status, retry_after_seconds, snippet, transport_failure
from upsignal.config import SalesforceSettings, secret
from upsignal.errors import ConfigError

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Record errors that a later attempt may get past.
RETRYABLE_RECORD_ERRORS = {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG"}
# NOTE: Salesforce documents no Retry-After for REQUEST_LIMIT_EXCEEDED and the allocation is
# a rolling 24 hours, so without the header upsignal waits this long before trying again.
REQUEST_LIMIT_WAIT = 900.0


class Stop(Exception):
    """A response that ends the whole batch; ``outcome`` applies to every alert not yet decided."""

    def __init__(self, outcome: Outcome):
        super().__init__(getattr(outcome, "reason", "stopped"))
        self.outcome = outcome


def require_extra() -> Any:
    """Import simple-salesforce's SOQL formatter, naming the extra to install if it is missing."""
    try:
        from simple_salesforce.format import format_soql
    except ImportError:
        raise ConfigError(
            "the salesforce destination needs simple-salesforce; install it with pip install 'upsignal[salesforce]'"
        ) from None
    return format_soql


class SalesforceSession:
    """An OAuth session on one org, renewed when Salesforce reports it invalid."""

    def __init__(self, settings: SalesforceSettings, sender: HttpSender):
        self.settings = settings
        self.sender = sender
        self.token: str | None = None
        self.instance_url: str | None = None

    def token_request(self) -> dict[str, str]:
        """Return the form fields of the token request for the configured flow, reading the secrets."""
        settings = self.settings
        client_id = secret(settings.client_id_env)
        if settings.auth == "client_credentials":
            return {"grant_type": "client_credentials", "client_id": client_id,
                    "client_secret": secret(settings.client_secret_env)}
        if settings.auth == "password":
            return {"grant_type": "password", "client_id": client_id,
                    "client_secret": secret(settings.client_secret_env),
                    "username": secret(settings.username_env), "password": secret(settings.password_env)}
        import jwt

        claims = {"iss": client_id, "sub": secret(settings.username_env),
                  "aud": settings.login_url.rstrip("/"), "exp": int(time.time()) + 180}
        assertion = jwt.encode(claims, secret(settings.private_key_env), algorithm="RS256")
        return {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}

    def login(self) -> None:
        """Get a new access token and instance URL; Stop with Retry if Salesforce refuses."""
        url = self.settings.login_url.rstrip("/") + "/services/oauth2/token"
        try:
            response = self.sender.send("POST", url, data=self.token_request())
        except httpx.TransportError as error:
            raise Stop(transport_failure(error)) from None
        if response.status_code != 200:
            # Bad credentials are fixed by the operator, so the alerts wait (and retry) meanwhile.
            raise Stop(Retry(
                f"Salesforce {self.settings.auth} login failed: HTTP {response.status_code} {snippet(response)}",
                status_code=response.status_code,
            ))
        answer = response.json()
        self.token, self.instance_url = answer["access_token"], answer["instance_url"].rstrip("/")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request to the org's REST API and return its JSON; renew the session once on 401."""
        if self.token is None:
            self.login()
        for renewed in (False, True):
            try:
                response = self.sender.send(
                    method, f"{self.instance_url}/services/data/v{self.settings.api_version}{path}",
                    headers={"Authorization": f"Bearer {self.token}"}, **kwargs,
                )
            except httpx.TransportError as error:
                raise Stop(transport_failure(error)) from None
            if response.status_code == 401 and not renewed:
                self.login()
                continue
            if 200 <= response.status_code < 300:
                return response.json() if response.content else None
            raise Stop(classify(response))
        raise AssertionError("unreachable: the loop returns or raises")


def error_code(response: httpx.Response) -> str:
    """Return the errorCode of a REST error body, which is a list of {message, errorCode, fields}."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return body[0].get("errorCode", "") if isinstance(body, list) and body and isinstance(body[0], dict) else ""


def classify(response: httpx.Response) -> Outcome:
    """Map a REST API error to an outcome."""
    code, name = response.status_code, error_code(response)
    if code == 401:
        return Retry(f"Salesforce rejected a new session too (HTTP 401 {name})", status_code=401)
    if code == 403 and name == "REQUEST_LIMIT_EXCEEDED":
        # https://developer.salesforce.com/docs/platform/salesforce-app-limits-cheatsheet/guide/salesforce-app-limits-platform-api.html
        wait = retry_after_seconds(response.headers.get("Retry-After")) or REQUEST_LIMIT_WAIT
        return Retry("Salesforce API request limit exceeded", wait, 403, rate_limited=True)
    outcome = classify_status(response)
    if isinstance(outcome, Failed):
        return Failed(f"Salesforce rejected the request: HTTP {code} {snippet(response)}", code)
    return outcome or Retry(f"unexpected HTTP {code}", status_code=code)


def record_outcome(result: dict[str, Any]) -> Outcome | None:
    """Return None for a record that a collection request saved, else the outcome saying why it did not."""
    if result.get("success"):
        return None
    errors = result.get("errors") or [{}]
    codes = {error.get("statusCode", "") for error in errors}
    reason = "; ".join(f"{error.get('statusCode', 'ERROR')}: {error.get('message', '')}" for error in errors)
    if codes & RETRYABLE_RECORD_ERRORS:
        return Retry(f"Salesforce did not save the record: {reason}")
    return Failed(f"Salesforce rejected the record: {reason}")
