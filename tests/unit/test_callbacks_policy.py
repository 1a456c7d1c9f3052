"""The callback URL guard against server-side request forgery."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from matchcast.config import Settings
from matchcast.errors import CallbackUrlRefused, InvalidInput
from matchcast.service.callbacks_policy import allowed_hosts_of, check_callback_url, check_callback_url_for

PUBLIC = "93.184.215.14"


def resolver(table: dict[str, Sequence[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError("name does not resolve")
        return table[host]

    return resolve


DNS = resolver(
    {
        "hooks.example.org": [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
        "rebind.example.org": [PUBLIC, "127.0.0.1"],  # one bad address is enough to refuse
        "internal.corp": ["10.1.2.3"],
        "metadata.corp": ["169.254.169.254"],
        "v6-local.example.org": ["fe80::1"],
        "mapped.example.org": ["::ffff:127.0.0.1"],
        "nat64.example.org": ["64:ff9b::a9fe:a9fe"],
        "cgnat.example.org": ["100.64.1.1"],
        "empty.example.org": [],
    }
)


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.org/matchcast", "http://hooks.example.org:8080/x?y=1", f"https://{PUBLIC}/cb"],
)
def test_public_http_urls_pass(url: str) -> None:
    checked = check_callback_url(url, resolver=DNS)
    assert checked.url == url and checked.addresses and not checked.allowed_by_name


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.org/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://hooks.example.org:70/_x", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("hooks.example.org/x", "scheme"),
        ("https://user:pw@hooks.example.org/x", "credentials"),
        ("https://hooks.example.org@127.0.0.1/x", "credentials"),
        ("http:///nohost", "no host"),
        ("http://hooks.example.org:99999/", "malformed"),
        ("http://hooks.example.org/a b", "spaces"),
        ("http://hooks.example.org/\r\nX: y", "control"),
        ("https://" + "a" * 3000 + ".org/", "characters"),
        ("http://127.0.0.1/", "loopback"),
        ("http://[::1]:8000/", "loopback"),
        ("http://localhost/", "does not resolve"),  # not in the fake DNS; the system's would give loopback
        ("http://10.0.0.8/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://metadata.corp/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://v6-local.example.org/", "link-local"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://mapped.example.org/", "loopback"),
        ("http://nat64.example.org/", "link-local"),
        ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 around 127.0.0.1
        ("http://internal.corp/", "private"),
        ("http://rebind.example.org/", "loopback"),
        ("http://cgnat.example.org/", "shared"),
        ("http://unknown.example.org/", "does not resolve"),
        ("http://empty.example.org/", "does not resolve"),
    ],
)
def test_refused(url: str, why: str) -> None:
    with pytest.raises(CallbackUrlRefused, match=why) as err:
        check_callback_url(url, resolver=DNS)
    assert isinstance(err.value, InvalidInput) and err.value.type == "callback_url_refused"


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "localhost"])
def test_odd_spellings_of_loopback_are_resolved_and_refused(host: str) -> None:
    with pytest.raises(CallbackUrlRefused):
        check_callback_url(f"http://{host}:9000/")  # the system resolver turns each into 127.0.0.1


def test_allowed_hosts_pass_as_they_are() -> None:
    allowed = ("internal.corp", "*.svc.cluster.local")
    assert check_callback_url("http://internal.corp/x", allowed, resolver=DNS).allowed_by_name
    assert check_callback_url("http://INTERNAL.corp./x", allowed, resolver=DNS).allowed_by_name
    assert check_callback_url("http://hook.ns.svc.cluster.local/x", allowed, resolver=DNS).allowed_by_name
    with pytest.raises(CallbackUrlRefused):
        check_callback_url("http://svc.cluster.local/x", allowed, resolver=DNS)
    with pytest.raises(CallbackUrlRefused):
        check_callback_url("http://internal.corp.evil.example/x", allowed, resolver=DNS)
    with pytest.raises(CallbackUrlRefused, match="scheme"):  # the scheme rule holds for allowed hosts too
        check_callback_url("ftp://internal.corp/x", allowed, resolver=DNS)


def test_allow_private_opens_private_and_loopback_only() -> None:
    for url in ("http://10.0.0.8/", "http://internal.corp/", "http://127.0.0.1:9000/", "http://cgnat.example.org/"):
        assert check_callback_url(url, allow_private=True, resolver=DNS).addresses
    for url in ("http://169.254.169.254/", "http://224.0.0.1/", "http://0.0.0.0/", "http://240.0.0.1/"):
        with pytest.raises(CallbackUrlRefused):
            check_callback_url(url, allow_private=True, resolver=DNS)


def test_policy_from_settings(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, callback_allowed_hosts=" Internal.Corp , ,*.svc.local ")
    assert allowed_hosts_of(settings) == ("internal.corp", "*.svc.local")
    assert check_callback_url_for(settings, "http://internal.corp/", resolver=DNS).allowed_by_name
    with pytest.raises(CallbackUrlRefused):
        check_callback_url_for(settings, "http://10.0.0.1/", resolver=DNS)
    private = Settings(home=tmp_path, callback_allow_private=True)
    assert check_callback_url_for(private, "http://10.0.0.1/", resolver=DNS).addresses == ("10.0.0.1",)
