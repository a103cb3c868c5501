"""A Salesforce org that follows the documented REST contracts upsignal relies on.

- ``/services/oauth2/token``: client_credentials, password and JWT bearer
  (RS256, checked against the connected app's public key) grants.
- A session answers 401 ``INVALID_SESSION_ID`` once expired
  (https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_error_handling_session_exp.htm).
- SOQL ``SELECT ... FROM Account WHERE <field> IN (...)``.
- sObject Collections upsert by an External ID field, at most 200 records,
  one UpsertResult per record in order
  (https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-upsert.html).
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

import jwt

from tests.vendors.base import Request, Response, VendorServer

API = "/services/data/v62.0"
COLLECTION_LIMIT = 200
EXTERNAL_IDS = {"Account": {"Upsignal_Domain__c", "Upsignal_Account_Id__c"}, "Task": {"Upsignal_Alert_Key__c"}}
FIELDS = {
    "Account": {"Name", "OwnerId", "Upsignal_Domain__c", "Upsignal_Account_Id__c", "Upsignal_Score__c",
                "Upsignal_Tier__c", "Upsignal_Reasons__c", "Upsignal_PQL_Date__c"},
    "Task": {"Upsignal_Alert_Key__c", "WhatId", "OwnerId", "Subject", "Description", "ActivityDate", "Status",
             "Priority"},
}
QUERY = re.compile(r"^SELECT (?P<fields>[\w, ]+) FROM (?P<sobject>\w+) WHERE (?P<field>\w+) IN \((?P<values>.*)\)$")
SOQL_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'")
API_USER = "005000000000API"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def sf_error(code: str, message: str) -> list[dict[str, Any]]:
    return [{"message": message, "errorCode": code}]


class SalesforceServer(VendorServer):
    def __init__(self, client_id: str = "3MVG-test", client_secret: str = "s3cret",
                 username: str = "api@example.com", password: str = "pw+token", public_key: str | None = None):
        super().__init__()
        self.client = {"client_id": client_id, "client_secret": client_secret}
        self.user = {"username": username, "password": password}
        self.public_key = public_key
        self.sessions: set[str] = set()
        self.logins = 0
        self.records: dict[str, dict[str, dict[str, Any]]] = {"Account": {}, "Task": {}}
        self.ids = itertools.count(1)
        self.reject: set[str] = set()  # external id values whose record fails validation
        # (sObject, External ID field) -> value -> record id, so upserts stay fast at 10,000 records.
        self.external_index: dict[tuple[str, str], dict[str, str]] = {}

    # -- test helpers ---------------------------------------------------------------

    def expire_sessions(self) -> None:
        with self.lock:
            self.sessions.clear()

    def add_account(self, owner: str, **fields: Any) -> str:
        record_id = self._new_id("001")
        self.records["Account"][record_id] = {"Id": record_id, "OwnerId": owner}
        self._store_fields("Account", self.records["Account"][record_id], fields)
        return record_id

    def _store_fields(self, sobject: str, record: dict[str, Any], fields: dict[str, Any]) -> None:
        for name, value in fields.items():
            if name in EXTERNAL_IDS[sobject]:
                self.external_index.setdefault((sobject, name), {})[value] = record["Id"]
        record.update(fields)

    def tasks_by_key(self) -> Counter[str]:
        return Counter(task.get("Upsignal_Alert_Key__c") for task in self.records["Task"].values())

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids):015d}"

    # -- routing --------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path == "/services/oauth2/token":
            return self.token(request)
        authorization = request.headers.get("Authorization", "")
        if authorization.removeprefix("Bearer ") not in self.sessions:
            return Response(401, sf_error("INVALID_SESSION_ID", "Session expired or invalid"))
        if request.method == "GET" and request.path == f"{API}/query":
            return self.query(request.query.get("q", [""])[0])
        parts = request.path.removeprefix(f"{API}/composite/sobjects/").split("/")
        if request.method == "PATCH" and request.path.startswith(f"{API}/composite/sobjects/") and len(parts) == 2:
            return self.upsert(parts[0], parts[1], request.json())
        return Response(404, sf_error("NOT_FOUND", f"The requested resource does not exist: {request.path}"))

    def token(self, request: Request) -> Response:
        form = {key: values[0] for key, values in parse_qs(request.body.decode()).items()}
        grant = form.get("grant_type")
        valid = False
        if grant in ("client_credentials", "password"):
            valid = all(form.get(key) == value for key, value in self.client.items())
            if grant == "password":
                valid = valid and all(form.get(key) == value for key, value in self.user.items())
        elif grant == JWT_GRANT and self.public_key:
            try:
                claims = jwt.decode(form.get("assertion", ""), self.public_key, algorithms=["RS256"], audience=self.url)
                valid = claims["iss"] == self.client["client_id"] and claims["sub"] == self.user["username"]
            except jwt.PyJWTError:
                valid = False
        if not valid:
            return Response(400, {"error": "invalid_grant", "error_description": "authentication failure"})
        self.logins += 1
        token = f"00D!session{self.logins}"
        self.sessions.add(token)
        return Response(200, {"access_token": token, "instance_url": self.url, "token_type": "Bearer",
                              "issued_at": str(int(time.time() * 1000)), "id": f"{self.url}/id/00D/{API_USER}"})

    def query(self, soql: str) -> Response:
        match = QUERY.match(soql.strip())
        if not match or match["sobject"] not in self.records:
            return Response(400, sf_error("MALFORMED_QUERY", f"unsupported query: {soql}"))
        values = {value.replace("\\'", "'").replace("\\\\", "\\") for value in SOQL_STRING.findall(match["values"])}
        fields = [name.strip() for name in match["fields"].split(",")]
        records = [
            {"attributes": {"type": match["sobject"]}, **{name: record.get(name) for name in fields}}
            for record in self.records[match["sobject"]].values() if record.get(match["field"]) in values
        ]
        return Response(200, {"totalSize": len(records), "done": True, "records": records})

    def upsert(self, sobject: str, key_field: str, body: dict) -> Response:
        if sobject not in self.records:
            return Response(404, sf_error("NOT_FOUND", f"sObject type {sobject} is not supported"))
        if key_field not in EXTERNAL_IDS[sobject]:
            return Response(400, sf_error("INVALID_FIELD", f"{key_field} is not an External ID field of {sobject}"))
        records = body.get("records", [])
        if len(records) > COLLECTION_LIMIT:
            return Response(400, sf_error("EXCEEDED_ID_LIMIT", f"record limit exceeded: {COLLECTION_LIMIT}"))
        return Response(200, [self.upsert_one(sobject, key_field, record) for record in records])

    def upsert_one(self, sobject: str, key_field: str, record: dict) -> dict[str, Any]:
        def failed(code: str, message: str) -> dict[str, Any]:
            return {"success": False, "created": False, "errors": [{"statusCode": code, "message": message, "fields": []}]}

        if (record.get("attributes") or {}).get("type") != sobject:
            return failed("INVALID_TYPE", "attributes.type must name the sObject of the request")
        fields = {name: value for name, value in record.items() if name != "attributes"}
        unknown = sorted(set(fields) - FIELDS[sobject])
        if unknown:
            return failed("INVALID_FIELD", f"No such column '{unknown[0]}' on entity '{sobject}'")
        key = fields.get(key_field)
        if not key:
            return failed("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{key_field}]")
        if key in self.reject:
            return failed("FIELD_CUSTOM_VALIDATION_EXCEPTION", "rejected by a validation rule")
        existing_id = self.external_index.get((sobject, key_field), {}).get(key)
        existing = self.records[sobject].get(existing_id) if existing_id else None
        if existing is None:
            if sobject == "Account" and not fields.get("Name"):
                return failed("REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]")
            record_id = self._new_id("001" if sobject == "Account" else "00T")
            existing = self.records[sobject][record_id] = {"Id": record_id, "OwnerId": API_USER}
            created = True
        else:
            created = False
        self._store_fields(sobject, existing, fields)
        return {"id": existing["Id"], "success": True, "errors": [], "created": created}
