"""Every rule of docs/api.md §5 on URLs, addresses and file names, without the network.

Paths inside the download root: tests/unit/test_storage_files.py.
"""

from __future__ import annotations

import ipaddress

import pytest

from bgdownload.config import Settings
from bgdownload.engine.addresses import (
    address_blocked,
    check_literal_host,
    literal_host_address,
    resolve_and_check,
)
from bgdownload.engine.names import (
    choose_filename,
    filename_from_content_disposition,
    filename_from_url,
)
from bgdownload.engine.urls import validate_url
from bgdownload.errors import BlockedDestination, InvalidURL
from bgdownload.storage.names import sanitize_filename

NETS = (ipaddress.ip_network("127.0.0.0/8"),)


# ----------------------------------------------------------------- URLs

@pytest.mark.parametrize("url", ["http://example.org/a", "https://example.org:8443/a?b=c",
                                 "HTTP://EXAMPLE.ORG/", "http://[2606:4700::1111]/x"])
def test_valid_urls(url: str) -> None:
    assert validate_url(f"  {url} ") == url


@pytest.mark.parametrize("url", [
    "ftp://example.org/a", "file:///etc/passwd", "javascript:alert(1)", "example.org/a",
    "http://user:pw@example.org/", "http://user@example.org/", "http:///path", "http://",
    "", "   ", "http://exa mple.org/", "http://example.org/\x00", "http://example.org:0/",
    "http://example.org:99999/", "data:text/plain,hi",
])
def test_invalid_urls(url: str) -> None:
    with pytest.raises(InvalidURL):
        validate_url(url)


def test_non_string_url() -> None:
    with pytest.raises(InvalidURL):
        validate_url(None)  # type: ignore[arg-type]


# ----------------------------------------------------------------- addresses

@pytest.mark.parametrize("host,expected", [
    ("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("017700000001", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("10.0.0.1", "10.0.0.1"), ("[::1]", "::1"), ("127.0.0.1.", "127.0.0.1"),
    ("[fe80::1%25eth0]", "fe80::1"),
])
def test_numeric_host_forms(host: str, expected: str) -> None:
    assert str(literal_host_address(host)) == expected


@pytest.mark.parametrize("host", ["example.org", "256.1.1.1", "1.2.3.4.5", "08.1.1.1", "0x", ""])
def test_names_are_not_literals(host: str) -> None:
    assert literal_host_address(host) is None or host == "0x"


BLOCKED = [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "192.168.1.1",  # loopback/private
    "169.254.169.254", "fe80::1",  # link-local
    "224.0.0.1", "239.255.255.250", "ff02::1",  # multicast
    "240.0.0.1", "255.255.255.255",  # reserved / broadcast
    "0.0.0.0", "::",  # unspecified
    "::1", "fc00::1", "fd12:3456::1",  # IPv6 loopback / unique local
    "100.64.0.1", "198.18.0.1", "192.0.0.1",  # shared, benchmarking, protocol assignments
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "2002:7f00:1::1", "2002:a00:1::",  # 6to4 of loopback / private
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "::127.0.0.1",  # IPv4-compatible
]


@pytest.mark.parametrize("addr", BLOCKED)
def test_blocked_ranges(addr: str) -> None:
    assert address_blocked(addr)
    with pytest.raises(BlockedDestination):
        check_literal_host(f"http://[{addr}]/" if ":" in addr else f"http://{addr}/", Settings())


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8",
                                  "2002:808:808::1"])
def test_public_addresses_pass(addr: str) -> None:
    assert not address_blocked(addr)


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f.1/", "http://017700000001/",
                                 "http://[::ffff:7f00:1]/", "http://0177.1:8080/x"])
def test_numeric_loopback_urls_blocked(url: str) -> None:
    with pytest.raises(BlockedDestination):
        check_literal_host(url, Settings())
    check_literal_host(url, Settings(allow_networks=NETS))  # exempted


def test_allow_networks_exemption_is_narrow() -> None:
    assert not address_blocked("127.0.0.1", NETS)
    assert not address_blocked("::ffff:127.0.0.1", NETS)  # mapped form counts as IPv4
    assert address_blocked("10.0.0.1", NETS)
    assert address_blocked("::1", NETS)  # IPv6 loopback is not in 127.0.0.0/8
    assert not address_blocked("::1", (ipaddress.ip_network("::1/128"),))


def test_dns_names_pass_the_literal_check() -> None:
    check_literal_host("http://localhost/", Settings())


async def test_resolve_and_check_blocks_localhost() -> None:
    with pytest.raises(BlockedDestination):
        await resolve_and_check("localhost", 80, Settings())
    addrs = await resolve_and_check("localhost", 80, Settings(allow_networks=NETS))
    assert ipaddress.ip_address("127.0.0.1") in addrs
    assert all(not address_blocked(a, NETS) for a in addrs)


async def test_resolve_and_check_literal() -> None:
    with pytest.raises(BlockedDestination):
        await resolve_and_check("0x7f.1", 80, Settings())
    assert await resolve_and_check("8.8.8.8", 80, Settings()) == [ipaddress.ip_address("8.8.8.8")]


# ----------------------------------------------------------------- file names

@pytest.mark.parametrize("raw,expected", [
    ("../../etc/passwd", "etc_passwd"),
    ("..\\..\\windows\\system.ini", "windows_system.ini"),
    ("\x00a", "a"),
    ("a\x00b\x1fc\x7f.txt", "abc.txt"),
    (".bashrc", "bashrc"),
    ("...hidden", "hidden"),
    ("..", "download"),
    (".", "download"),
    ("", "download"),
    (None, "download"),
    ("/", "download"),
    ("report..pdf", "report.pdf"),
    ("movie\u202eexe.mp4", "movieexe.mp4"),  # right-to-left override removed
    ("a/b/c.txt", "a_b_c.txt"),
    ("normal name (1).tar.gz", "normal name (1).tar.gz"),
    ("trailing dot. ", "trailing dot"),
    ("ünïcödé.txt", "ünïcödé.txt"),
])
def test_sanitize_filename(raw: str | None, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_long_names_keep_extension_and_byte_limit() -> None:
    name = sanitize_filename("a" * 300 + ".mp4")
    assert len(name.encode()) == 200 and name.endswith(".mp4")
    wide = sanitize_filename("é" * 300 + ".tar.gz")
    assert len(wide.encode()) <= 200 and wide.endswith(".tar.gz")
    wide.encode("utf-8").decode("utf-8")  # not cut inside a character
    no_ext = sanitize_filename("b" * 300)
    assert len(no_ext.encode()) == 200


@pytest.mark.parametrize("header,expected", [
    ('attachment; filename="report.pdf"', "report.pdf"),
    ("attachment; filename=plain.bin", "plain.bin"),
    ("attachment; filename*=UTF-8''%E2%82%AC%20rates.txt", "€ rates.txt"),
    ('attachment; filename="fallback.txt"; filename*=UTF-8\'\'na%C3%AFve.txt', "naïve.txt"),
    ("attachment; filename*=iso-8859-1'en'%A3%20rates", "£ rates"),
    ('attachment; filename="a\\"b.txt"', 'a"b.txt'),
    ('attachment; filename="semi;colon.txt"', "semi;colon.txt"),
    ('attachment; filename="../../etc/passwd"', "../../etc/passwd"),
    ("attachment", None),
    ("", None),
    (None, None),
    ("attachment; filename*=bogus-charset''x", None),
])
def test_content_disposition(header: str | None, expected: str | None) -> None:
    assert filename_from_content_disposition(header) == expected


def test_filename_from_url() -> None:
    assert filename_from_url("https://h/a/b/file%20name.iso?x=1#f") == "file name.iso"
    assert filename_from_url("https://h/dir/") == "dir"
    assert filename_from_url("https://h/") is None


def test_choose_filename_order() -> None:
    url = "https://h/from-url.bin"
    cd = 'attachment; filename="from-cd.bin"'
    assert choose_filename("wish.bin", cd, url) == "wish.bin"
    assert choose_filename(None, cd, url) == "from-cd.bin"
    assert choose_filename(None, None, url) == "from-url.bin"
    assert choose_filename("..", 'attachment; filename="/"', "https://h/") == "download"
    assert choose_filename(None, 'attachment; filename="../../.ssh/id_rsa"', url) == "ssh_id_rsa"


def test_documentation_ranges_are_not_refused() -> None:
    """docs/api.md §5 names loopback, private, link-local, multicast, reserved, unspecified;
    the documentation ranges are none of those (and host package mirrors here)."""
    for addr in ("203.0.113.80", "192.0.2.1", "198.51.100.7", "2001:db8::1"):
        assert not address_blocked(addr)
    for addr in ("10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "198.18.0.1"):
        assert address_blocked(addr)
