"""URL observables: RFC 3986 percent-encoding of real-looking URLs, and the few that cannot be URLs."""

from __future__ import annotations

import pytest

from exportkit_ctia.mapping import Unmappable, normalise_observable
from exportkit_ctia.urls import UrlError, normalise_url

# (as ThreatQ holds it, what CTIA gets)
TABLE = [
    ("http://example.org/a path/x?q=two words", "http://example.org/a%20path/x?q=two%20words"),
    ("https://login.micros0ft-support.com/common/oauth2/authorize?client_id=abc&redirect_uri=https://evil.example/cb",
     "https://login.micros0ft-support.com/common/oauth2/authorize?client_id=abc&redirect_uri=https://evil.example/cb"),
    ("http://paypal.com.secure-login.example/webscr?cmd=_login-run&dispatch=5885d80a13c0db1f8e263663d3faee8d",
     "http://paypal.com.secure-login.example/webscr?cmd=_login-run&dispatch=5885d80a13c0db1f8e263663d3faee8d"),
    ("http://203.0.113.7/Invoice 2024-03 (1).pdf", "http://203.0.113.7/Invoice%202024-03%20(1).pdf"),
    ("https://sharepoint-docs.example/sites/Finance/Shared Documents/Q1 Report.xlsx?web=1",
     "https://sharepoint-docs.example/sites/Finance/Shared%20Documents/Q1%20Report.xlsx?web=1"),
    ("http://example.com/über/straße?stadt=münchen", "http://example.com/%C3%BCber/stra%C3%9Fe?stadt=m%C3%BCnchen"),
    ("http://пример.рф/путь", "http://xn--e1afmkfd.xn--p1ai/%D0%BF%D1%83%D1%82%D1%8C"),
    ("https://bücher.example/kaufen", "https://xn--bcher-kva.example/kaufen"),
    ("http://例え.テスト/index.html", "http://xn--r8jz45g.xn--zckzah/index.html"),
    ("http://[2001:DB8::1]:8080/gate.php?id=1", "http://[2001:db8::1]:8080/gate.php?id=1"),
    ("http://example.com/search?q[]=a&q[]=b", "http://example.com/search?q%5B%5D=a&q%5B%5D=b"),
    ("http://example.com/cgi-bin/test.cgi?cmd=ls|id", "http://example.com/cgi-bin/test.cgi?cmd=ls%7Cid"),
    ("http://example.com/a^b/c?x=1^2", "http://example.com/a%5Eb/c?x=1%5E2"),
    ("https://example.com/page#section two", "https://example.com/page#section%20two"),
    ("https://example.com/app#/route?x=1#again", "https://example.com/app#/route?x=1%23again"),
    ("http://example.com/already%20encoded/100%", "http://example.com/already%20encoded/100%25"),
    ("http://example.com/%7euser/%e2%82%ac", "http://example.com/%7Euser/%E2%82%AC"),
    ("HTTP://WWW.Example.COM/CaseKept/Index.HTML?Q=Yes", "http://www.example.com/CaseKept/Index.HTML?Q=Yes"),
    ("https://user:Pa ss@Host.example/x", "https://user:Pa%20ss@host.example/x"),
    ("http://example.com/path\\with\\backslashes", "http://example.com/path%5Cwith%5Cbackslashes"),
    ('http://example.com/"quoted"/<tag>', "http://example.com/%22quoted%22/%3Ctag%3E"),
    ("http://example.com/{braces}/`tick`", "http://example.com/%7Bbraces%7D/%60tick%60"),
    ("hxxp://defanged.example/x y", "hxxp://defanged.example/x%20y"),
    ("ftp://files.example:2121/pub/file name.zip", "ftp://files.example:2121/pub/file%20name.zip"),
    ("  http://example.com/tab\there  ", "http://example.com/tab%09here"),
    ("http://example.com:8080", "http://example.com:8080"),
    ("http://example.com?only=query", "http://example.com?only=query"),
    ("http://xn--bcher-kva.example/ok", "http://xn--bcher-kva.example/ok"),
]


@pytest.mark.parametrize(("raw", "sent"), TABLE, ids=[raw.strip()[:50] for raw, _ in TABLE])
def test_real_looking_urls_are_percent_encoded_not_skipped(raw: str, sent: str) -> None:
    assert normalise_observable("url", raw) == ("url", sent)


def test_the_table_is_big_enough_and_results_are_stable() -> None:
    assert len(TABLE) >= 20
    for _raw, sent in TABLE:
        assert normalise_url(sent) == sent  # encoding twice changes nothing
        assert not any(ch.isspace() or ord(ch) > 126 for ch in sent)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("example.com/path", "needs a scheme and a host"),
        ("/relative/path", "needs a scheme and a host"),
        ("mailto:someone@example.com", "needs a scheme and a host"),
        ("http:///no-host", "needs a scheme and a host"),
        ("http://exa mple.com/x", "white space in its host"),
        ("http://example.com\t.evil/x", "white space in its host"),
        ("http://example.com:99999/", "does not parse"),
        ("http://example.com:80a/", "does not parse"),
        ("http://[2001:db8::1/x", "unclosed IPv6 host"),
        ("http://[not-an-ip]/x", "invalid IPv6 host"),
        ("   ", "empty"),
    ],
)
def test_what_cannot_be_a_url_is_skipped_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(UrlError, match=why):
        normalise_url(raw)
    with pytest.raises(Unmappable, match=why):
        normalise_observable("url", raw)
