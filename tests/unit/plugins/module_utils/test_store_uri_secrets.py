# -*- coding: utf-8 -*-
"""store_uri secrets: every form of a URI password, redaction in any text, the ?password= form."""
import pytest

from ansible.module_utils.six.moves.urllib.parse import quote, quote_plus

from ansible_collections.mlflowops.maintenance.plugins.module_utils.store_uri import (
    parse_backend_store_uri,
    redact_uri,
    secret_forms,
)
from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import split_userinfo

SECRET = "MlPw#Sec%ret/1 +x"


@pytest.mark.parametrize("written", [
    quote(SECRET, safe=""),      # properly percent-encoded
    quote(SECRET),               # encoded, / kept
    quote_plus(SECRET),          # form-encoded (space as +)
])
def test_secret_forms_cover_raw_decoded_and_reencoded(written):
    for uri in ("postgresql://u:%s@h:5432/db" % written, "postgresql://u@h/db?sslmode=require&password=%s" % written):
        forms = secret_forms(uri)
        assert written in forms
        assert SECRET in forms
        assert quote(SECRET, safe="") in forms and quote_plus(SECRET) in forms
        assert "" not in forms


def test_secret_forms_of_an_unencoded_password_and_of_uris_without_one():
    forms = secret_forms("postgresql://u:MlPw#Sec%ret/1@h/db")
    assert "MlPw#Sec%ret/1" in forms
    assert secret_forms("sqlite:////srv/mlflow.db") == set()
    assert secret_forms("postgresql://u@h/db") == set()
    assert secret_forms("s3://bucket/prefix") == set()
    assert secret_forms(None) == set()


@pytest.mark.parametrize("text,expected", [
    ("postgresql://u:p%23w@h/db", "postgresql://u:***@h/db"),
    ("cannot connect to http://admin:hunter2@tracking:5000/api: refused",
     "cannot connect to http://admin:***@tracking:5000/api: refused"),
    ("postgresql://u@h/db?sslmode=require&password=p%23w&application_name=x",
     "postgresql://u@h/db?sslmode=require&password=***&application_name=x"),
    ("postgresql://u@h/db?PASSWORD=x", "postgresql://u@h/db?PASSWORD=***"),
    ("two: mysql://a:b@h/x and https://c:d@e/f", "two: mysql://a:***@h/x and https://c:***@e/f"),
    ("no secrets: http://host:5000/x and s3://b/k", "no secrets: http://host:5000/x and s3://b/k"),
    ("'postgresql://u:MlPw#Sec%ret/1@h/db'", "'postgresql://u:***@h/db'"),
])
def test_redact_uri_in_any_text(text, expected):
    assert redact_uri(text) == expected


def test_query_password_is_used_and_never_shown():
    store = parse_backend_store_uri("postgresql://mlflow@h:5432/db?sslmode=require&password=p%23w%2F1")
    assert store.password == "p#w/1"
    assert "password" not in store.query
    assert "p%23w" not in store.redacted() and "p#w" not in store.redacted()
    assert store.redacted() == "postgresql://mlflow:***@h:5432/db?sslmode=require"
    assert "p#w" not in repr(store.to_result())
    assert store.psycopg2_kwargs()["password"] == "p#w/1"
    assert "password=" not in store.sqlalchemy_url(driver="psycopg2")
    assert store.sqlalchemy_url(driver="psycopg2").startswith("postgresql+psycopg2://mlflow:p%23w%2F1@h:5432/db")
    assert not any("p#w" in value for value in store.libpq_env().values())


def test_password_precedence_option_then_userinfo_then_query():
    uri = "postgresql://u:fromuri@h/db?password=fromquery"
    assert parse_backend_store_uri(uri).password == "fromuri"
    assert parse_backend_store_uri(uri, password="fromoption").password == "fromoption"
    assert parse_backend_store_uri("postgresql://u@h/db?password=fromquery").password == "fromquery"


def test_malformed_uri_messages_are_redacted():
    with pytest.raises(Exception) as caught:
        parse_backend_store_uri("postgresql://u:p%23w@h:99999/db")
    assert "p%23w" not in str(caught.value) and "p#w" not in str(caught.value)


def test_tracking_uri_userinfo_is_split_off():
    assert split_userinfo("https://admin:p%23w@mlflow.example:8443/prefix") == (
        "https://mlflow.example:8443/prefix", "admin", "p#w")
    assert split_userinfo("http://mlflow.example") == ("http://mlflow.example", None, None)
    assert split_userinfo("http://token@mlflow.example") == ("http://mlflow.example", "token", None)


def test_tracking_client_uses_uri_credentials_as_basic_auth_and_never_keeps_them_in_urls():
    from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
    from ansible_collections.mlflowops.maintenance.plugins.module_utils.tracking import TrackingClient

    client = TrackingClient("http://admin:p%23w@mlflow.example:5000/")
    assert client.session.auth == ("admin", "p#w")
    assert client.base_url == "http://mlflow.example:5000"
    assert "p%23w" not in client.url("runs/search")
    explicit = TrackingClient("http://admin:p%23w@mlflow.example", username="other", password="pw2")
    assert explicit.session.auth == ("other", "pw2")
    with pytest.raises(MaintenanceError) as caught:
        TrackingClient("ftp://admin:p%23w@mlflow.example")
    assert "p%23w" not in caught.value.msg and "admin:***@" in caught.value.msg
