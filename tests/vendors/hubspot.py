"""A HubSpot account that follows the documented CRM v3/v4 contracts upsignal relies on.

- Bearer private app token, else 401.
- Properties API: list, create groups (409 if present), batch create.
- Objects: batch read (by id or a unique ``idProperty``), batch update, batch
  upsert by a unique ``idProperty`` (400 if the property is not unique,
  https://developers.hubspot.com/docs/api-reference/latest/crm/objects/companies/batch/upsert-companies),
  at most 100 inputs; a failed input makes the answer 207 Multi-Status with
  the input's ``objectWriteTraceId`` in the error's context
  (https://developers.hubspot.com/docs/api-reference/error-handling).
- Company search with ``IN`` and ``NOT_HAS_PROPERTY`` filters, sorted by createdate.
- v4 default associations, batch.
- With ``limit_per_window`` set, the ten-secondly limit as a rolling window of
  ``window_seconds``: 429 with policyName TEN_SECONDLY_ROLLING
  (https://developers.hubspot.com/docs/api/usage-details).
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter, deque
from typing import Any

from tests.vendors.base import Request, Response, VendorServer

BATCH_LIMIT = 100
DEFAULT_PROPERTIES = {
    "companies": ["name", "domain", "hubspot_owner_id", "createdate"],
    "notes": ["hs_timestamp", "hs_note_body", "hubspot_owner_id"],
    "tasks": ["hs_timestamp", "hs_task_subject", "hs_task_body", "hs_task_status", "hs_task_priority",
              "hubspot_owner_id"],
}
OBJECT_PATH = re.compile(r"^/crm/v3/objects/(\w+)/batch/(read|update|upsert)$")
PROPERTY_PATH = re.compile(r"^/crm/v3/properties/(\w+)(/groups|/batch/create)?$")
ASSOCIATE_PATH = re.compile(r"^/crm/v4/associations/(\w+)/(\w+)/batch/associate/default$")


def error(category: str, message: str, trace_id: str | None = None) -> dict[str, Any]:
    context = {"objectWriteTraceId": [trace_id]} if trace_id else {}
    return {"status": "error", "category": category, "message": message, "context": context}


class HubSpotServer(VendorServer):
    def __init__(self, token: str = "pat-test-token", limit_per_window: int | None = None, window_seconds: float = 10):
        super().__init__()
        self.token = token
        self.properties = {kind: {name: {"name": name, "hasUniqueValue": False} for name in names}
                           for kind, names in DEFAULT_PROPERTIES.items()}
        self.groups: dict[str, set[str]] = {kind: set() for kind in DEFAULT_PROPERTIES}
        self.objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in DEFAULT_PROPERTIES}
        self.associations: set[tuple[str, str, str, str]] = set()
        self.ids = itertools.count(1001)
        self.reject: set[str] = set()  # id values (or trace ids) whose input fails with VALIDATION_ERROR
        self.limit_per_window = limit_per_window
        self.window_seconds = window_seconds
        self.recent: deque[float] = deque()
        # (object type, unique property) -> value -> record id, so upserts stay fast at 10,000 records.
        self.unique_index: dict[tuple[str, str], dict[str, str]] = {}

    # -- test helpers -----------------------------------------------------------------

    def add_company(self, **properties: str) -> str:
        company_id = str(next(self.ids))
        properties.setdefault("createdate", f"{time.time():.6f}")
        self.objects["companies"][company_id] = {"id": company_id, "properties": {}}
        self.write("companies", self.objects["companies"][company_id], properties)
        return company_id

    def engagement_counts(self, kind: str = "notes", key_property: str = "upsignal_alert_key") -> Counter[str]:
        return Counter(record["properties"].get(key_property) for record in self.objects[kind].values())

    def companies_with(self, prop: str, value: str) -> list[dict[str, Any]]:
        return [record for record in self.objects["companies"].values() if record["properties"].get(prop) == value]

    def associated_companies(self, kind: str, object_id: str) -> list[str]:
        return [to_id for from_kind, from_id, to_kind, to_id in self.associations
                if from_kind == kind and from_id == object_id and to_kind == "companies"]

    # -- routing ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return Response(401, {"status": "error", "category": "INVALID_AUTHENTICATION",
                                  "message": "Authentication credentials not found."})
        if self.limit_per_window is not None and self._over_limit():
            return Response(429, {"status": "error", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING",
                                  "message": "You have reached your ten_secondly_rolling limit."})
        if request.path == "/crm/v3/objects/companies/search":
            return self.search(request.json())
        if match := OBJECT_PATH.match(request.path):
            return getattr(self, f"batch_{match.group(2)}")(match.group(1), request.json())
        if match := PROPERTY_PATH.match(request.path):
            return self.property_call(match.group(1), match.group(2), request)
        if match := ASSOCIATE_PATH.match(request.path):
            return self.associate(match.group(1), match.group(2), request.json())
        return Response(404, {"status": "error", "category": "OBJECT_NOT_FOUND", "message": request.path})

    def _over_limit(self) -> bool:
        now = time.monotonic()
        while self.recent and now - self.recent[0] >= self.window_seconds:
            self.recent.popleft()
        if len(self.recent) >= self.limit_per_window:
            return True
        self.recent.append(now)
        return False

    @staticmethod
    def batch_answer(results: list[dict], errors: list[dict], created: bool = False) -> Response:
        body: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            body.update(errors=errors, numErrors=len(errors))
            return Response(207, body)
        return Response(201 if created else 200, body)

    # -- properties ----------------------------------------------------------------------------

    def property_call(self, kind: str, suffix: str | None, request: Request) -> Response:
        if kind not in self.properties:
            return Response(400, {"status": "error", "category": "VALIDATION_ERROR", "message": f"unknown {kind}"})
        if suffix is None and request.method == "GET":
            return Response(200, {"results": list(self.properties[kind].values())})
        body = request.json()
        if suffix == "/groups":
            if body["name"] in self.groups[kind]:
                return Response(409, {"status": "error", "category": "CONFLICT", "message": "group exists"})
            self.groups[kind].add(body["name"])
            return Response(201, {"name": body["name"], "label": body.get("label")})
        results, errors = [], []
        for item in body["inputs"]:
            if item["name"] in self.properties[kind]:
                errors.append(error("CONFLICT", f"property {item['name']} already exists"))
            elif item.get("groupName") not in self.groups[kind] | {"companyinformation"}:
                errors.append(error("VALIDATION_ERROR", f"group {item.get('groupName')} does not exist"))
            else:
                self.properties[kind][item["name"]] = dict(item)
                results.append(dict(item))
        return self.batch_answer(results, errors, created=True)

    # -- objects ---------------------------------------------------------------------------------

    def find(self, kind: str, id_property: str | None, value: str) -> dict[str, Any] | None:
        if id_property is None:
            return self.objects[kind].get(value)
        if (kind, id_property) in self.unique_index:
            record_id = self.unique_index[(kind, id_property)].get(value)
            return self.objects[kind].get(record_id) if record_id else None
        return next((record for record in self.objects[kind].values()
                     if record["properties"].get(id_property) == value), None)

    def write(self, kind: str, record: dict[str, Any], properties: dict[str, Any]) -> None:
        """Set properties on a record, keeping the unique-value indexes current."""
        for name, value in properties.items():
            if self.properties[kind].get(name, {}).get("hasUniqueValue"):
                index = self.unique_index.setdefault((kind, name), {})
                old = record["properties"].get(name)
                if old is not None and index.get(old) == record["id"]:
                    del index[old]
                index[value] = record["id"]
        record["properties"].update(properties)

    def batch_read(self, kind: str, body: dict) -> Response:
        results, errors = [], []
        for item in body["inputs"]:
            record = self.find(kind, body.get("idProperty"), item["id"])
            if record is None:
                errors.append(error("OBJECT_NOT_FOUND", f"{item['id']} not found"))
            else:
                wanted = body.get("properties") or []
                results.append({"id": record["id"],
                                "properties": {name: record["properties"].get(name) for name in wanted}})
        return self.batch_answer(results, errors)

    def check_input(self, kind: str, item: dict, record_id: str | None) -> dict | None:
        """The error for an input's properties, or None: unknown properties and unique clashes."""
        trace_id = item.get("objectWriteTraceId")
        for name, value in item.get("properties", {}).items():
            definition = self.properties[kind].get(name)
            if definition is None:
                return error("VALIDATION_ERROR", f"Property \"{name}\" does not exist", trace_id)
            if definition.get("hasUniqueValue"):
                clash = self.find(kind, name, value)
                if clash is not None and clash["id"] != record_id:
                    return error("CONFLICT", f"{name}={value} is already used by {clash['id']}", trace_id)
        if trace_id in self.reject or item.get("id") in self.reject:
            return error("VALIDATION_ERROR", "Property values were not valid", trace_id)
        return None

    def batch_update(self, kind: str, body: dict) -> Response:
        if len(body["inputs"]) > BATCH_LIMIT:
            return Response(400, error("VALIDATION_ERROR", f"at most {BATCH_LIMIT} inputs"))
        results, errors = [], []
        for item in body["inputs"]:
            record = self.objects[kind].get(item["id"])
            problem = error("OBJECT_NOT_FOUND", "not found", item.get("objectWriteTraceId")) if record is None \
                else self.check_input(kind, item, item["id"])
            if problem:
                errors.append(problem)
                continue
            self.write(kind, record, item["properties"])
            results.append({"id": record["id"], "properties": dict(record["properties"]),
                            "objectWriteTraceId": item.get("objectWriteTraceId")})
        return self.batch_answer(results, errors)

    def batch_upsert(self, kind: str, body: dict) -> Response:
        inputs = body["inputs"]
        if len(inputs) > BATCH_LIMIT:
            return Response(400, error("VALIDATION_ERROR", f"at most {BATCH_LIMIT} inputs"))
        results, errors = [], []
        for item in inputs:
            id_property = item.get("idProperty")
            if not self.properties[kind].get(id_property, {}).get("hasUniqueValue"):
                return Response(400, error("VALIDATION_ERROR", f"{id_property} is not a unique property"))
            record = self.find(kind, id_property, item["id"])
            problem = self.check_input(kind, item, record["id"] if record else None)
            if problem:
                errors.append(problem)
                continue
            new = record is None
            if new:
                record_id = str(next(self.ids))
                record = {"id": record_id, "properties": {"createdate": f"{time.time():.6f}"}}
                self.objects[kind][record_id] = record
                self.write(kind, record, {id_property: item["id"]})
            self.write(kind, record, item["properties"])
            results.append({"id": record["id"], "new": new, "properties": dict(record["properties"]),
                            "objectWriteTraceId": item.get("objectWriteTraceId")})
        return self.batch_answer(results, errors)

    def search(self, body: dict) -> Response:
        filters = body["filterGroups"][0]["filters"]
        matches = list(self.objects["companies"].values())
        for condition in filters:
            name = condition["propertyName"]
            if condition["operator"] == "IN":
                values = {value.lower() for value in condition["values"]}
                matches = [record for record in matches if (record["properties"].get(name) or "").lower() in values]
            elif condition["operator"] == "NOT_HAS_PROPERTY":
                matches = [record for record in matches if not record["properties"].get(name)]
            else:
                return Response(400, error("VALIDATION_ERROR", f"operator {condition['operator']} not supported"))
        matches.sort(key=lambda record: float(record["properties"].get("createdate", "0")))
        start = int(body.get("after") or 0)
        page = matches[start:start + int(body.get("limit", 10))]
        answer: dict[str, Any] = {"total": len(matches), "results": [
            {"id": record["id"], "properties": {name: record["properties"].get(name) for name in body["properties"]}}
            for record in page
        ]}
        if start + len(page) < len(matches):
            answer["paging"] = {"next": {"after": str(start + len(page))}}
        return Response(200, answer)

    def associate(self, from_kind: str, to_kind: str, body: dict) -> Response:
        results, errors = [], []
        for item in body["inputs"]:
            from_id, to_id = str(item["from"]["id"]), str(item["to"]["id"])
            if from_id not in self.objects[from_kind] or to_id not in self.objects[to_kind]:
                errors.append(error("OBJECT_NOT_FOUND", f"{from_kind} {from_id} or {to_kind} {to_id} not found"))
                continue
            self.associations.add((from_kind, from_id, to_kind, to_id))
            results.append({"from": {"id": from_id}, "to": {"id": to_id},
                            "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}})
        return self.batch_answer(results, errors, created=True)
