"""The HubSpot CRM v3/v4 endpoints the HubSpot destination calls, and how their errors map to outcomes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from upsignal.alerts.destination import Failed, Outcome, PlannedRequest, Retry
from upsignal.alerts.http import HttpSender, RateLimiter, classify_status, retry_after_seconds, snippet, transport_failure
from upsignal.config import HubSpotSettings, RateLimitSettings

# CRM search allows 4 requests per second per token:
# https://developers.hubspot.com/changelog/crm-search-api-rate-limit-increase
SEARCH_RATE_LIMIT = RateLimitSettings(requests=4, seconds=1)
SEARCH_PAGE_SIZE = 100
MAX_SEARCH_PAGES = 20
PROPERTY_GROUP = "upsignal"
# After a 429 for the rolling ten-second window without a Retry-After header.
TEN_SECONDLY_WAIT = 10.0


class Stop(Exception):
    """A response that ends the whole batch; ``outcome`` applies to every alert not yet decided."""

    def __init__(self, outcome: Outcome):
        super().__init__(getattr(outcome, "reason", "stopped"))
        self.outcome = outcome


def seconds_until_midnight(timezone: str, now: datetime | None = None) -> float:
    """Seconds until the next midnight in ``timezone``, when HubSpot's daily limit resets.

    >>> from datetime import UTC
    >>> seconds_until_midnight("UTC", datetime(2024, 3, 1, 23, 30, tzinfo=UTC))
    1800.0
    """
    zone = ZoneInfo(timezone)
    local = (now or datetime.now(zone)).astimezone(zone)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - local).total_seconds()


def property_definitions(prefix: str, engagement_type: str) -> dict[str, list[dict[str, Any]]]:
    """Return the custom properties upsignal needs, per object type, as the properties API takes them."""

    def text(name: str, label: str, unique: bool = False, field_type: str = "text") -> dict[str, Any]:
        return {"name": f"{prefix}{name}", "label": label, "type": "string", "fieldType": field_type,
                "groupName": PROPERTY_GROUP, "hasUniqueValue": unique}

    return {
        "companies": [
            text("domain", "upsignal domain", unique=True),
            {"name": f"{prefix}score", "label": "upsignal score", "type": "number", "fieldType": "number",
             "groupName": PROPERTY_GROUP},
            text("tier", "upsignal tier"),
            text("reasons", "upsignal reasons", field_type="textarea"),
            {"name": f"{prefix}pql_date", "label": "upsignal PQL date", "type": "date", "fieldType": "date",
             "groupName": PROPERTY_GROUP},
            text("account_url", "upsignal account link"),
        ],
        engagement_type: [text("alert_key", "upsignal alert key", unique=True)],
    }


class HubSpotApi:
    """Requests to one HubSpot account with a private app token; failures raise Stop."""

    def __init__(self, settings: HubSpotSettings, token: str, limit: RateLimitSettings | None):
        self.settings = settings
        self.base_url = settings.api_url.rstrip("/")
        self.sender = HttpSender(settings.name, settings.timeout_seconds, limit)
        self.search_limiter = RateLimiter(SEARCH_RATE_LIMIT)
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: Any = None, accept: tuple[int, ...] = ()) -> dict[str, Any]:
        """Send one request; return its JSON for 2xx (and ``accept``ed statuses), else raise Stop."""
        try:
            response = self.sender.send(method, self.base_url + path, json=body, headers=self.headers)
        except httpx.TransportError as error:
            raise Stop(transport_failure(error)) from None
        if 200 <= response.status_code < 300 or response.status_code in accept:
            return response.json() if response.content else {}
        raise Stop(self.classify(response))

    def classify(self, response: httpx.Response) -> Outcome:
        """Map an error response to an outcome, reading the rate-limit policy of a 429."""
        code = response.status_code
        if code == 401:
            return Retry(
                f"HubSpot rejected the token in ${self.settings.token_env} (HTTP 401); check that it holds"
                " a current private app access token", status_code=401,
            )
        if code == 403:
            return Failed(f"HubSpot refused the request (HTTP 403); the private app may lack a scope: "
                          f"{snippet(response)}", 403)
        if code == 429:
            return self.rate_limited(response)
        return classify_status(response) or Retry(f"unexpected HTTP {code}", status_code=code)

    def rate_limited(self, response: httpx.Response) -> Retry:
        """Return the retry for a 429: wait for Retry-After, else for the window its policy names.

        The body names the policy: ``TEN_SECONDLY_ROLLING`` for the burst limit,
        ``DAILY`` for the daily one, which resets at midnight in the account's
        time zone (https://developers.hubspot.com/docs/api/usage-details).
        """
        try:
            policy = response.json().get("policyName")
        except ValueError:
            policy = None
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        if wait is None:
            wait = seconds_until_midnight(self.settings.timezone) if policy == "DAILY" else TEN_SECONDLY_WAIT
        return Retry(f"HubSpot rate limit reached (policy {policy or 'not named'})", wait, 429, rate_limited=True)

    def batch(self, object_type: str, action: str, inputs: list[dict[str, Any]]) -> tuple[list[dict], dict[str, dict]]:
        """Call a batch endpoint; return its results (each with ``traceId``) and the errors by trace id.

        A 207 Multi-Status response lists the failed inputs in ``errors``; an
        input is matched by the ``objectWriteTraceId`` it was sent with.
        """
        answer = self.call("POST", f"/crm/v3/objects/{object_type}/batch/{action}", {"inputs": inputs})
        results = answer.get("results", [])
        for result in results:
            id_property = next((item["idProperty"] for item in inputs if "idProperty" in item), None)
            result["traceId"] = (
                result.get("objectWriteTraceId")
                or (result.get("properties") or {}).get(id_property or "")
                or result.get("id")
            )
        returned = {result["traceId"] for result in results}
        errors: dict[str, dict] = {}
        general: dict | None = None
        for error in answer.get("errors", []):
            traced = (error.get("context") or {}).get("objectWriteTraceId") or []
            for trace_id in traced:
                errors[trace_id] = error
            if not traced:
                general = general or error
        for item in inputs:
            trace_id = item.get("objectWriteTraceId") or item.get("id")
            if trace_id not in returned and trace_id not in errors and general is not None:
                errors[trace_id] = general
        return results, errors

    def read_by_property(self, object_type: str, id_property: str, values: list[str]) -> dict[str, str]:
        """Return value -> record id for the records whose unique ``id_property`` has one of the values."""
        answer = self.call("POST", f"/crm/v3/objects/{object_type}/batch/read", {
            "idProperty": id_property, "properties": [id_property], "inputs": [{"id": value} for value in values],
        })
        return {
            result["properties"][id_property]: result["id"]
            for result in answer.get("results", []) if (result.get("properties") or {}).get(id_property)
        }

    def search_oldest_by_domain(self, domains: list[str], claimed_property: str) -> dict[str, str]:
        """Return domain -> id of the oldest company with that ``domain`` and no ``claimed_property``."""
        body: dict[str, Any] = {
            "filterGroups": [{"filters": [
                {"propertyName": "domain", "operator": "IN", "values": domains},
                {"propertyName": claimed_property, "operator": "NOT_HAS_PROPERTY"},
            ]}],
            "properties": ["domain", "createdate"],
            "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
            "limit": SEARCH_PAGE_SIZE,
        }
        oldest: dict[str, str] = {}
        for _ in range(MAX_SEARCH_PAGES):
            self.search_limiter.acquire()
            answer = self.call("POST", "/crm/v3/objects/companies/search", body)
            for result in answer.get("results", []):
                domain = ((result.get("properties") or {}).get("domain") or "").lower()
                oldest.setdefault(domain, result["id"])
            after = ((answer.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                break
            body["after"] = after
        return {domain: company_id for domain, company_id in oldest.items() if domain in domains}

    def company_owners(self, company_ids: list[str]) -> dict[str, str]:
        """Return company id -> owner id (``hubspot_owner_id``) for companies that have an owner."""
        if not company_ids:
            return {}
        answer = self.call("POST", "/crm/v3/objects/companies/batch/read", {
            "properties": ["hubspot_owner_id"], "inputs": [{"id": company_id} for company_id in company_ids],
        })
        return {
            result["id"]: result["properties"]["hubspot_owner_id"]
            for result in answer.get("results", []) if (result.get("properties") or {}).get("hubspot_owner_id")
        }

    def associate(self, from_type: str, to_type: str, pairs: list[tuple[str, str]]) -> dict[str, str]:
        """Create the default association for each (from id, to id); return from id -> error for failures."""
        if not pairs:
            return {}
        answer = self.call(
            "POST", f"/crm/v4/associations/{from_type}/{to_type}/batch/associate/default",
            {"inputs": [{"from": {"id": from_id}, "to": {"id": to_id}} for from_id, to_id in pairs]},
        )
        done = {str(result["from"]["id"]) for result in answer.get("results", [])}
        reason = next((error.get("message", "") for error in answer.get("errors", [])), "no result returned")
        return {from_id: reason for from_id, _ in pairs if from_id not in done}

    def ensure_properties(self, object_type: str, definitions: list[dict[str, Any]]) -> None:
        """Create the missing properties and their group; raise Stop with Failed if HubSpot rejects them."""
        existing = {item["name"] for item in self.call("GET", f"/crm/v3/properties/{object_type}").get("results", [])}
        missing = [item for item in definitions if item["name"] not in existing]
        if not missing:
            return
        self.call("POST", f"/crm/v3/properties/{object_type}/groups",
                  {"name": PROPERTY_GROUP, "label": "upsignal"}, accept=(409,))
        answer = self.call("POST", f"/crm/v3/properties/{object_type}/batch/create", {"inputs": missing})
        created = {item["name"] for item in answer.get("results", [])}
        rejected = [item["name"] for item in missing if item["name"] not in created]
        if rejected:
            reason = next((error.get("message", "") for error in answer.get("errors", [])), "")
            raise Stop(Failed(f"creating {object_type} properties {', '.join(rejected)} in HubSpot failed: {reason}"))

    def planned(self, method: str, path: str, body: Any = None) -> PlannedRequest:
        return PlannedRequest(method, self.base_url + path, {"Authorization": f"Bearer <${self.settings.token_env}>"}, body)

    def close(self) -> None:
        self.sender.close()
