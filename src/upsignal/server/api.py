"""The admin API: current account scores with explanations, behind a bearer token."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from upsignal.scoring.explain import Explanation, explain_account, list_explanations
from upsignal.server.errors import ErrorBody
from upsignal.server.live import StoreCursor


class Contribution(BaseModel):
    rule: str
    points: float
    signal: str | None
    value: float | None
    threshold: float | None
    trait: str | None
    sentence: str


class AccountScore(BaseModel):
    """An account's current score, tier and the reasons for it. Times are UTC."""

    account_id: str
    name: str | None
    domain: str | None
    score: float
    tier: str
    tier_since: datetime | None
    as_of: datetime
    run_id: int
    model_version: str
    previous_score: float | None
    contributions: list[Contribution]
    signals: dict[str, Any]
    reasons: list[str]


class AccountList(BaseModel):
    accounts: list[AccountScore]


_bearer = HTTPBearer(auto_error=False, description="The admin token from the environment variable that"
                     " server.admin_token_env names (default UPSIGNAL_ADMIN_TOKEN)")
_ERRORS = {401: {"model": ErrorBody, "description": "Missing or wrong admin token"},
           400: {"model": ErrorBody, "description": "Invalid query parameter"},
           503: {"model": ErrorBody, "description": "The server failed; retry later"}}


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    expected: str | None = request.app.state.admin_token
    if not expected:
        raise HTTPException(401, f"the admin API is disabled: set {request.app.state.admin_token_env}"
                            " to a token before starting the server", {"WWW-Authenticate": "Bearer"})
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong admin token: send 'Authorization: Bearer TOKEN'",
                            {"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/api", dependencies=[Depends(require_admin)], tags=["admin"], responses=_ERRORS)


@router.get("/accounts/{account_id}", response_model=AccountScore,
            responses={404: {"model": ErrorBody, "description": "The account has no score"}})
def get_account(account_id: str, request: Request) -> Any:
    """Return an account's current score, tier and explanation."""
    store = StoreCursor(request.app.state.store)
    try:
        return _account_json(explain_account(store, account_id))
    finally:
        store.close()


@router.get("/accounts", response_model=AccountList)
def get_accounts(
    request: Request,
    tier: Annotated[str | None, Query(max_length=100, description="Only accounts in this tier, e.g. pql")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many accounts")] = 100,
) -> Any:
    """List scored accounts, highest score first, with their explanations."""
    store = StoreCursor(request.app.state.store)
    try:
        return {"accounts": [_account_json(item) for item in list_explanations(store, tier, limit)]}
    finally:
        store.close()


def _account_json(item: Explanation) -> dict[str, Any]:
    """Return an explanation as JSON-ready data, its naive UTC times marked as UTC."""
    data = item.to_dict()
    for name in ("as_of", "tier_since"):
        if data[name] is not None:
            data[name] = data[name].replace(tzinfo=UTC)
    return data
