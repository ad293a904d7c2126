"""Webhook URLs are checked and shown by one core helper, shared by hooks and notifiers."""

# Imports internals on purpose: the one URL helper.

from __future__ import annotations

import subprocess
import sys

import pytest

from canarykit import ConfigError
from canarykit._urls import check_url, shown_url


def test_a_webhook_does_not_load_the_optional_notify_package():
    code = (
        "import sys, canarykit\n"
        "canarykit.hooks.Webhook('https://hooks.example.com/T/secret')\n"
        "print(sorted(m for m in sys.modules if m.startswith('canarykit.notify')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/services/T0/B1/secret", "https://hooks.example.com/***"),
        ("http://user:pw@[::1]:8080/x?token=s", "http://[::1]:8080/***"),
        ("not a url", "***"),
        ("https://host:99999/x", "***"),
    ],
)
def test_only_scheme_and_host_of_a_url_are_shown(url, shown):
    assert shown_url(url) == shown


def test_a_refused_url_is_never_quoted_in_full():
    with pytest.raises(ConfigError) as caught:
        check_url("ftp://hooks.example.com/secret-token")
    assert "secret-token" not in str(caught.value)
    assert "ftp://hooks.example.com/***" in str(caught.value)


def test_the_hook_and_the_notifier_refuse_a_bad_url_alike():
    import canarykit
    from canarykit.notify import Notifier

    with pytest.raises(ConfigError) as from_hook:
        canarykit.hooks.Webhook("https://hooks.example.com/a b")
    with pytest.raises(ConfigError) as from_notifier:
        Notifier("https://hooks.example.com/a b", rollout="web")
    assert str(from_hook.value) == str(from_notifier.value)
