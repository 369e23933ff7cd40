"""The input rules of docs/api.md §17 one by one, without a server: what is refused and why."""

from __future__ import annotations

import json

import pytest

from bgdownload import keys
from bgdownload.engine.sources.http import headers_for_hop, origin
from bgdownload.errors import InvalidRequest, RateLimited
from bgdownload.server.errors import protocol_error_body
from bgdownload.service import streams, validation
from bgdownload.storage.names import sanitize_filename, without_paths
from bgdownload.web import requests
from bgdownload.web.errors import error_reply
from bgdownload.web.rest import content_disposition

# -- headers --


@pytest.mark.parametrize("name, value", [
    ("X-Nul", "a\x00b"), ("X-Vt", "a\x0bb"), ("X-Crlf", "a\r\nInjected: 1"),
    ("X-Accent", "caf\u00e9"), ("X-Ls", "a\u2028b"), ("X-Lead", " padded"),
    ("Bad Name", "v"), ("X-Colon:", "v"), ("", "v"), ("X-\u00e9", "v"),
    ("Host", "example.org"), ("content-length", "5"), ("Transfer-Encoding", "chunked"),
    ("Connection", "close"), ("Keep-Alive", "5"), ("TE", "trailers"), ("Trailer", "X"),
    ("Upgrade", "h2c"), ("Proxy-Connection", "close"), ("Proxy-Authorization", "Basic x"),
    ("Range", "bytes=0-1"), ("If-Range", "x"),
])
def test_bad_caller_headers_are_refused_naming_the_header(name: str, value: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validation._headers({name: value})
    if name and name.isascii():
        assert name.strip(":") in refused.value.message


def test_good_headers_pass_unchanged_also_as_form_json_text() -> None:
    headers = {"X-Api-Key": "k", "Private-Token": "p q\tr", "Authorization": "Bearer t",
               "Empty": ""}
    assert validation._headers(headers) == headers
    assert validation._headers(json.dumps(headers)) == headers


def test_same_header_twice_in_other_case_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="twice"):
        validation._headers({"X-A": "1", "x-a": "2"})


def test_all_caller_headers_stay_with_the_first_origin() -> None:
    caller = {"X-Api-Key": "k", "Private-Token": "p"}
    assert headers_for_hop(caller, "http://a.example/x", "http://A.example:80/y") == caller
    for elsewhere in ("http://b.example/x", "https://a.example/x", "http://a.example:81/x"):
        assert headers_for_hop(caller, "http://a.example/x", elsewhere) == {}
    assert origin("https://h.example/") == ("https", "h.example", 443)


# -- idempotency, JSON depth, event ids, file ids, sha256 --


def test_idempotency_keys_of_owners_with_colons_differ() -> None:
    assert keys.idempotency("alice", "x:k1") != keys.idempotency("alice:x", "k1")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
def test_json_deeper_than_64_is_a_400(depth: int) -> None:
    body = '{"url": "http://h/", "metadata": {"a": ' + nested(depth - 2) + "}}"
    with pytest.raises(InvalidRequest, match="nested deeper than 64"):
        requests.json_object(body.encode())


def test_json_64_deep_is_accepted_and_form_fields_are_checked_too() -> None:
    body = '{"metadata": {"a": ' + nested(62) + "}}"
    assert requests.json_object(body.encode())["metadata"]
    with pytest.raises(InvalidRequest, match="metadata is nested deeper"):
        validation._json_field('{"a": ' + nested(1_000) + "}", "metadata", dict)


@pytest.mark.parametrize("bad", ["abc", "1-2-3", "-1", "1-", "9999999999999999999999-0",
                                 "18446744073709551616-0", "1 2", "0x10-0", "\uff11-0"])
def test_malformed_last_event_ids_are_a_400(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="Last-Event-ID"):
        requests.last_event_id(bad)


def test_plain_last_event_ids_pass() -> None:
    assert requests.last_event_id(None, " 1732479303301-0 ") == "1732479303301-0"
    assert requests.last_event_id("18446744073709551615-18446744073709551615")
    assert requests.last_event_id("", None) is None


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "a.b", "%2e%2e", "", "a" * 65, 1.5, None,
                                 True, {"x": 1}, "é"])
def test_file_ids_must_be_plain_identifiers(bad: object) -> None:
    with pytest.raises(InvalidRequest):
        validation.files_from_ids("http://h/files/{file_id}/data", [bad])


def test_plain_file_ids_fill_the_template() -> None:
    files = validation.files_from_ids("http://h/f/{file_id}", [7, "ab_C-9"])
    assert [f["url"] for f in files] == ["http://h/f/7", "http://h/f/ab_C-9"]


@pytest.mark.parametrize("bad", ["a" * 64 + "\n", "a" * 63, "a" * 65, "g" * 64, " " + "a" * 63])
def test_sha256_is_exactly_64_hex_characters(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="sha256"):
        validation._sha256(bad)


# -- names, paths, Content-Disposition, error bodies --


@pytest.mark.parametrize("name, safe", [
    ("CON", "_CON"), ("con.txt", "_con.txt"), ("NUL.tar.gz", "_NUL.tar.gz"),
    ("COM1", "_COM1"), ("lpt9.log", "_lpt9.log"), ("CONSOLE.txt", "CONSOLE.txt"),
    ("a\u2028b\u2029c", "a b c"), ("x\uff0fy", "x_y"), ("a\u2215b\u2044c\u29f8d", "a_b_c_d"),
    ("evil\u202egpj.exe", "evilgpj.exe"), ("\u2066x\u2069\u200e\u200f.txt", "x.txt"),
])
def test_names_lose_device_names_separators_and_look_alikes(name: str, safe: str) -> None:
    assert sanitize_filename(name) == safe
    assert sanitize_filename(safe) == safe  # stable: a resumed .part keeps its name


def test_messages_name_files_relative_to_the_root() -> None:
    message = "[Errno 13] Permission denied: '/srv/dl/bob/x.pdf.part'"
    assert without_paths(message, "/srv/dl") == "[Errno 13] Permission denied: 'bob/x.pdf.part'"
    assert "/etc" not in without_paths("cannot open /etc/shadow", "/srv/dl")
    reply = error_reply(PermissionError(13, "Permission denied", "/srv/dl/x"))
    assert reply.status == 503 and "/srv" not in reply.message


def test_content_disposition_has_filename_star_and_an_ascii_fallback() -> None:
    value = content_disposition('rapport é"x%.txt')
    assert value == ("attachment; filename=\"rapport __x_.txt\"; "
                     "filename*=UTF-8''rapport%20%C3%A9%22x%25.txt")
    assert value.isascii()


def test_protocol_refusals_have_the_error_body() -> None:
    body = json.loads(protocol_error_body(431))
    assert body["error"]["code"] == "headers_too_large" and body["error"]["message"]


# -- stream slots --


async def test_stream_slots_refuse_past_the_cap_and_free_on_close() -> None:
    async def events():  # type: ignore[no-untyped-def]
        yield None

    slots = streams.StreamSlots(2)
    first, second = slots.hold("alice", events()), slots.hold("alice", events())
    with pytest.raises(RateLimited) as refused:
        slots.hold("alice", events())
    assert error_reply(refused.value).headers["Retry-After"] == "5"
    other = slots.hold("bob", events())  # the cap is per owner
    await first.aclose()
    third = slots.hold("alice", events())
    del second  # dropped without being started: its slot comes back too
    fourth = slots.hold("alice", events())
    assert slots.open == {"alice": 2, "bob": 1}
    for held in (other, third, fourth):
        await held.aclose()
    assert slots.open == {}
