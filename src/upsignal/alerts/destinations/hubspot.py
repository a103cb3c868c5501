"""HubSpot: upsert the account's company by domain, then a note or task on it.

HubSpot's batch upsert needs an ``idProperty`` whose values are unique, and
the company ``domain`` property is not one. So upsignal creates a unique
company property, ``upsignal_domain``, and:

1. reads the companies that already carry each domain in it (batch read);
2. for domains not found, searches companies by ``domain`` and stamps the
   oldest match with ``upsignal_domain``, so an existing company is reused
   instead of duplicated (``match_existing_by_domain``);
3. upserts the companies by ``upsignal_domain`` with score, tier, reasons,
   PQL date and account link, then names the companies it created;
4. upserts one note (or task) per alert by a unique ``upsignal_alert_key``
   property, and associates it with the company.

Every step is an upsert or sets the same values again, so re-delivering an
alert changes nothing. Steps use batch endpoints of at most 100 inputs.
NOTE: the CRM search index lags writes by seconds, so a company created in
HubSpot moments before the alert can still be duplicated in step 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from upsignal.alerts.context import Alert
from upsignal.alerts.destination import Delivered, Destination, Failed, Outcome, PlannedRequest, Retry
from upsignal.alerts.destinations.hubspot_api import HubSpotApi, Stop, property_definitions
from upsignal.alerts.render import headline, html_text, plain_text
from upsignal.config import HubSpotSettings, RateLimitSettings, secret

# Per-input error categories in a 207 response that a later attempt may get past.
RETRYABLE_CATEGORIES = {"RATE_LIMITS", "INTERNAL_ERROR", "TIMEOUT", "LOCKED"}


class HubSpotDestination(Destination):
    """Companies, notes or tasks in HubSpot through a private app token."""

    kind = "hubspot"
    # CRM v3 batch endpoints take at most 100 inputs per request. NOTE: the reference pages of
    # batch upsert and batch create do not state the number; 100 is the cap integrations use.
    max_batch_size = 100
    # Private apps on Free and Starter accounts may make 100 requests per 10 seconds
    # (190 on Professional and Enterprise): https://developers.hubspot.com/docs/api/usage-details
    # and https://developers.hubspot.com/changelog/increasing-our-api-limits
    default_rate_limit = RateLimitSettings(requests=100, seconds=10)

    def __init__(self, settings: HubSpotSettings, dry_run: bool = False):
        super().__init__(settings, dry_run)
        token = f"<${settings.token_env}>" if dry_run else secret(settings.token_env)
        self.api = HubSpotApi(settings, token, self.rate_limit)
        self.prefix = settings.property_prefix
        self.engagement_type = "notes" if settings.engagement == "note" else "tasks"
        self.properties_ready = False

    def deliver(self, alerts: Sequence[Alert]) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        for alert in alerts:
            if not alert.domain:
                outcomes[alert.alert_id] = Failed(
                    f"account {alert.account_id} has no domain, and HubSpot companies are matched by domain"
                )
        pending = [alert for alert in alerts if alert.alert_id not in outcomes]
        try:
            self.ensure_properties()
            companies = self.upsert_companies(pending, outcomes)
            pending = [alert for alert in pending if alert.alert_id not in outcomes]
            self.upsert_engagements(pending, companies, outcomes)
        except Stop as stop:
            for alert in alerts:
                outcomes.setdefault(alert.alert_id, stop.outcome)
        return [outcomes[alert.alert_id] for alert in alerts]

    # -- properties -------------------------------------------------------------

    def ensure_properties(self) -> None:
        """Create upsignal's company and engagement properties once per process, if missing."""
        if self.properties_ready:
            return
        for object_type, definitions in property_definitions(self.prefix, self.engagement_type).items():
            self.api.ensure_properties(object_type, definitions)
        self.properties_ready = True

    # -- companies --------------------------------------------------------------

    def upsert_companies(self, alerts: list[Alert], outcomes: dict[int, Outcome]) -> dict[str, str]:
        """Upsert one company per domain; return domain -> company id, recording failures in ``outcomes``."""
        latest: dict[str, Alert] = {}
        for alert in sorted(alerts, key=lambda item: (item.as_of, item.alert_id)):
            latest[alert.domain] = alert
        if not latest:
            return {}
        if self.settings.match_existing_by_domain:
            self.claim_existing_companies(list(latest))
        inputs = [
            {"idProperty": f"{self.prefix}domain", "id": domain, "objectWriteTraceId": domain,
             "properties": self.company_properties(alert)}
            for domain, alert in latest.items()
        ]
        results, errors = self.api.batch("companies", "upsert", inputs)
        companies = {result["traceId"]: result["id"] for result in results}
        self.name_new_companies([result for result in results if result.get("new")], latest)
        for alert in alerts:
            if alert.domain not in companies:
                outcomes[alert.alert_id] = self.input_failure(errors.get(alert.domain))
        return companies

    def claim_existing_companies(self, domains: list[str]) -> None:
        """Stamp ``upsignal_domain`` on the oldest existing company of each domain that has none yet."""
        found = self.api.read_by_property("companies", f"{self.prefix}domain", domains)
        missing = [domain for domain in domains if domain not in found]
        if not missing:
            return
        oldest = self.api.search_oldest_by_domain(missing, f"{self.prefix}domain")
        if oldest:
            inputs = [{"id": company_id, "properties": {f"{self.prefix}domain": domain}, "objectWriteTraceId": domain}
                      for domain, company_id in oldest.items()]
            self.api.batch("companies", "update", inputs)

    def name_new_companies(self, created: list[dict[str, Any]], latest: dict[str, Alert]) -> None:
        # NOTE: a crash between the upsert and this request leaves the company unnamed, because the
        # retry's upsert no longer reports it as new. Naming any company without a name instead
        # could overwrite a name that the upsert response merely left out.
        inputs = [
            {"id": result["id"], "properties": {"name": latest[result["traceId"]].name}}
            for result in created if latest[result["traceId"]].name
        ]
        if inputs:
            self.api.batch("companies", "update", inputs)

    def company_properties(self, alert: Alert) -> dict[str, str]:
        properties = {
            "domain": alert.domain or "",
            f"{self.prefix}score": f"{alert.score:g}",
            f"{self.prefix}tier": alert.tier,
            f"{self.prefix}reasons": "\n".join(alert.reasons),
            f"{self.prefix}account_url": alert.url,
        }
        if alert.event == "entered" and alert.is_pql:
            # Date properties take midnight UTC; an ISO date is accepted too.
            properties[f"{self.prefix}pql_date"] = alert.as_of.date().isoformat()
        return properties

    # -- notes and tasks ----------------------------------------------------------

    def upsert_engagements(self, alerts: list[Alert], companies: dict[str, str], outcomes: dict[int, Outcome]) -> None:
        """Upsert a note or task per alert by its key and associate it with the company."""
        if not alerts:
            return
        owners = self.api.company_owners(list(set(companies.values()))) if self.engagement_type == "tasks" else {}
        inputs = []
        for alert in alerts:
            company_id = companies[alert.domain]
            inputs.append({
                "idProperty": f"{self.prefix}alert_key", "id": alert.key, "objectWriteTraceId": alert.key,
                "properties": self.engagement_properties(alert, owners.get(company_id)),
            })
        results, errors = self.api.batch(self.engagement_type, "upsert", inputs)
        created = {result["traceId"]: result["id"] for result in results}
        pairs = [(created[alert.key], companies[alert.domain]) for alert in alerts if alert.key in created]
        association_errors = self.api.associate(self.engagement_type, "companies", pairs)
        for alert in alerts:
            if alert.key not in created:
                outcomes[alert.alert_id] = self.input_failure(errors.get(alert.key))
            elif created[alert.key] in association_errors:
                outcomes[alert.alert_id] = Retry(f"associating the {self.settings.engagement} failed: "
                                                 f"{association_errors[created[alert.key]]}")
            else:
                external = f"company {companies[alert.domain]}, {self.settings.engagement} {created[alert.key]}"
                outcomes[alert.alert_id] = Delivered(external)

    def engagement_properties(self, alert: Alert, owner_id: str | None) -> dict[str, str]:
        timestamp = alert.as_of.isoformat(timespec="milliseconds") + "Z"
        if self.engagement_type == "notes":
            return {"hs_timestamp": timestamp, "hs_note_body": html_text(alert)}
        properties = {
            "hs_timestamp": timestamp, "hs_task_subject": headline(alert), "hs_task_body": plain_text(alert),
            "hs_task_status": "NOT_STARTED", "hs_task_priority": "HIGH",
        }
        if owner_id:
            properties["hubspot_owner_id"] = owner_id
        return properties

    def input_failure(self, error: dict[str, Any] | None) -> Outcome:
        """The outcome of an input that a 200 or 207 response did not return as a result."""
        if error is None:
            return Retry("HubSpot returned no result for this input")
        reason = f"HubSpot rejected the input ({error.get('category', 'error')}): {error.get('message', '')}"
        if error.get("category") in RETRYABLE_CATEGORIES:
            return Retry(reason)
        return Failed(reason)

    # -- dry run --------------------------------------------------------------------

    def plan(self, alerts: Sequence[Alert]) -> list[PlannedRequest]:
        api = self.api
        with_domain = [alert for alert in alerts if alert.domain]
        requests = [api.planned("GET", f"/crm/v3/properties/{kind}") for kind in ("companies", self.engagement_type)]
        company_inputs = [
            {"idProperty": f"{self.prefix}domain", "id": alert.domain, "properties": self.company_properties(alert)}
            for alert in with_domain
        ]
        requests.append(api.planned("POST", "/crm/v3/objects/companies/batch/upsert", {"inputs": company_inputs}))
        engagement_inputs = [
            {"idProperty": f"{self.prefix}alert_key", "id": alert.key,
             "properties": self.engagement_properties(alert, None)}
            for alert in with_domain
        ]
        requests.append(api.planned("POST", f"/crm/v3/objects/{self.engagement_type}/batch/upsert",
                                    {"inputs": engagement_inputs}))
        associations = [{"from": {"id": f"<{self.settings.engagement} of alert {alert.key}>"},
                         "to": {"id": f"<company of {alert.domain}>"}} for alert in with_domain]
        requests.append(api.planned(
            "POST", f"/crm/v4/associations/{self.engagement_type}/companies/batch/associate/default",
            {"inputs": associations},
        ))
        return requests

    def close(self) -> None:
        self.api.close()

