"""Secrets of a database URL hidden in messages: every trace of a long one, a short one where no
letter or digit touches it (hiding every "e" of a message would leave it unreadable); as written
and percent-encoded."""

from __future__ import annotations

import pytest

from humanoid_training.persistence.engine import _scrub
from uowstress.scratch import hide_secrets

LONG = "Sup3r-s3cret"


def test_a_long_password_is_hidden_wherever_it_appears() -> None:
    url = f"postgresql://app:{LONG}@db/lab"
    shown = hide_secrets(f"rejected {LONG}, also in x{LONG}x and {LONG}.", url)
    assert LONG not in shown
    assert shown == "rejected ***, also in x***x and ***."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password e rejected", "password *** rejected"),
        ('user "e" (e) [e] e', 'user "***" (***) [***] ***'),
        ("postgresql://app:e@db/lab", "postgresql://app:***@db/lab"),
        ("password=e;", "password=***;"),
        (
            "the password is e. Or e? e&x=1 #e e-1 e!",
            "the password is ***. Or ***? ***&x=1 #*** ***-1 ***!",
        ),
        # Inside a word it is a letter, not the password.
        ("Access denied for user eve", "Access denied for user eve"),
    ],
)
def test_a_short_password_is_hidden_where_it_stands_alone(text: str, expected: str) -> None:
    assert hide_secrets(text, "mysql://root:e@127.0.0.1/test") == expected
    assert _scrub(text, "e") == expected


def test_secrets_of_the_query_string_are_hidden_too() -> None:
    url = f"postgresql://app@db/lab?sslpassword={LONG}&password=k9"
    assert hide_secrets(f"key {LONG} and k9 but not k99", url) == "key *** and *** but not k99"


def test_a_url_without_secrets_or_that_cannot_be_read_changes_nothing() -> None:
    assert hide_secrets("some message", "postgresql://app@db/lab") == "some message"
    assert hide_secrets("some message", "not a url") == "some message"
    assert _scrub("some message", None) == "some message"


@pytest.mark.parametrize("password", ["p@ss", "Sup3r@secret/x"])
def test_a_password_is_hidden_percent_encoded_too(password: str) -> None:
    from urllib.parse import quote

    encoded = quote(password, safe="")
    url = f"postgresql://app:{encoded}@db/lab"
    shown = hide_secrets(f"url postgresql://app:{encoded}@db/lab, said {password}", url)
    assert password not in shown and encoded not in shown, shown
    assert _scrub(f"{encoded} and {password}", password) == "*** and ***"
