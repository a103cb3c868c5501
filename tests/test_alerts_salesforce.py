"""Salesforce specifics: the three OAuth flows, existing Accounts and their owners, session renewal."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.vendors.harness import build_destination, make_alert
from tests.vendors.salesforce import SalesforceServer
from upsignal.alerts.destination import Delivered, Retry


@pytest.fixture
def key_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture
def server(key_pair, monkeypatch):
    vendor = SalesforceServer(public_key=key_pair[1]).start()
    for name, value in {"TEST_SF_CLIENT_ID": "3MVG-test", "TEST_SF_CLIENT_SECRET": "s3cret",
                        "TEST_SF_USERNAME": "api@example.com", "TEST_SF_PASSWORD": "pw+token",
                        "TEST_SF_KEY": key_pair[0]}.items():
        monkeypatch.setenv(name, value)
    yield vendor
    vendor.stop()


@pytest.mark.parametrize("flow", ["client_credentials", "password", "jwt_bearer"])
def test_each_oauth_flow_delivers(server, flow):
    destination = build_destination("salesforce", server, auth=flow, username_env="TEST_SF_USERNAME",
                                    password_env="TEST_SF_PASSWORD", private_key_env="TEST_SF_KEY")

    outcome = destination.deliver([make_alert(1)])[0]

    assert isinstance(outcome, Delivered), outcome
    assert server.logins == 1


def test_wrong_credentials_wait_for_a_fix(server, monkeypatch):
    monkeypatch.setenv("TEST_SF_CLIENT_SECRET", "wrong")
    destination = build_destination("salesforce", server)

    outcome = destination.deliver([make_alert(1)])[0]

    assert isinstance(outcome, Retry)
    assert "client_credentials login failed: HTTP 400" in outcome.reason
    assert not outcome.rate_limited


def test_existing_account_keeps_name_and_owner_gets_task(server):
    account_id = server.add_account("005OWNER0000001", Name="Acct One Inc.", Upsignal_Domain__c="acct1.example")
    destination = build_destination("salesforce", server)
    alert = make_alert(1)

    outcome = destination.deliver([alert])[0]

    assert outcome == Delivered(f"Account {account_id}, Task 00T{2:015d}")
    account = server.records["Account"][account_id]
    assert account["Name"] == "Acct One Inc."
    assert (account["Upsignal_Score__c"], account["Upsignal_Tier__c"]) == (91.0, "pql")
    assert account["Upsignal_PQL_Date__c"] == "2024-03-01"
    [task] = server.records["Task"].values()
    assert (task["WhatId"], task["OwnerId"]) == (account_id, "005OWNER0000001")
    assert task["Subject"] == "Account 1 (acct1.example) is a PQL: score 91, up from 62"
    assert task["Upsignal_Alert_Key__c"] == alert.key


def test_new_account_is_created_with_a_name(server):
    destination = build_destination("salesforce", server)

    destination.deliver([make_alert(4)])

    [account] = server.records["Account"].values()
    assert account["Name"] == "Account 4"
    assert account["Upsignal_Domain__c"] == "acct4.example"


def test_account_id_can_be_the_key(server):
    destination = build_destination("salesforce", server, account_key="account_id",
                                    account_key_field="Upsignal_Account_Id__c")

    outcome = destination.deliver([make_alert(5, domain=None, account_id="user:42")])[0]

    assert isinstance(outcome, Delivered)
    [account] = server.records["Account"].values()
    assert account["Upsignal_Account_Id__c"] == "user:42"


def test_session_renewed_only_once(server):
    destination = build_destination("salesforce", server)
    destination.deliver([make_alert(1)])

    def expire_on_every_request(phase: str, _number: int) -> None:
        if phase == "received":
            server.sessions.clear()

    server.hook = expire_on_every_request
    outcome = destination.deliver([make_alert(2)])[0]

    assert isinstance(outcome, Retry)
    assert "rejected a new session too" in outcome.reason
    assert server.logins == 2


def test_full_collection_of_200_delivers(server):
    destination = build_destination("salesforce", server)

    assert destination.batch_size == 200
    assert len(destination.deliver([make_alert(number) for number in range(200)])) == 200
    assert len(server.records["Task"]) == 200
