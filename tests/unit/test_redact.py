"""mask_url and mask_secrets: no message carries a database password."""

from __future__ import annotations

import pytest

from mlflow_team.redact import MASK, mask_secrets, mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("team+postgresql://root:s3cret-pw@127.0.0.1:5432/mlflow",
         "team+postgresql://root:***@127.0.0.1:5432/mlflow"),
        ("postgresql+psycopg://root:s3cret-pw@db/mlflow", "postgresql+psycopg://root:***@db/mlflow"),
        ("team+mysql+pymysql://root:p%40ss%2Fw@db:3306/mlflow",
         "team+mysql+pymysql://root:***@db:3306/mlflow"),
        ("team+postgresql://root@db/mlflow?password=s3cret-pw&sslmode=require",
         "team+postgresql://root@db/mlflow?password=***&sslmode=require"),
    ],
)
def test_a_password_in_a_url_is_shown_as_stars(url, shown):
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    "url",
    ["team+sqlite:///mlflow.db", "sqlite:////tmp/x.db", "team+postgresql://mlflow@db:5432/mlflow"],
)
def test_a_url_without_a_password_comes_back_unchanged(url):
    assert mask_url(url) == url


def test_a_url_sqlalchemy_cannot_parse_is_masked_by_pattern():
    assert mask_url("team+postgresql://root:s3cret-pw@db:notaport/x") == "team+postgresql://root:***@db:notaport/x"


def test_the_password_is_taken_out_of_a_driver_message_wherever_it_appears():
    url = "team+postgresql://root:s3cret-pw@127.0.0.1:5432/nosuchdb"
    text = (
        f"could not connect to {url[len('team+'):]}: FATAL: password 's3cret-pw' was refused "
        f"(dsn: host=127.0.0.1 password=s3cret-pw)"
    )
    masked = mask_secrets(text, url)
    assert "s3cret-pw" not in masked
    assert "postgresql://root:***@127.0.0.1:5432/nosuchdb" in masked
    assert masked.count(MASK) == 3


def test_a_percent_encoded_password_is_masked_decoded_and_encoded():
    url = "team+mysql+pymysql://root:p%40ss%2Fw0rd@db/mlflow"
    masked = mask_secrets(f"url {url}; access denied for p@ss/w0rd (p%40ss%2Fw0rd)", url)
    assert "p@ss/w0rd" not in masked and "p%40ss%2Fw0rd" not in masked


def test_passwords_of_other_urls_in_the_text_are_masked_too():
    masked = mask_secrets("replica mysql://u:other-pw@replica/db failed", "team+sqlite:///x.db")
    assert masked == "replica mysql://u:***@replica/db failed"


def test_a_text_without_secrets_is_left_alone():
    text = "FATAL: database \"nosuchdb\" does not exist (user@example.com)"
    assert mask_secrets(text, "team+postgresql://root@127.0.0.1/nosuchdb") == text
