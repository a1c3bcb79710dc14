"""Peer-supplied text made visible: copra.attest.text, and where the proxy and the
verifier apply it."""

from __future__ import annotations

import json
import logging

import pytest

from copra.attest.aproxy import KbsReply
from copra.attest.text import escape_logger, visible


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, unicode é ü 漢", "plain text, unicode é ü 漢"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x1b[2J\x00\x7f", "\\x1b[2J\\x00\\x7f"),
        ("\u202eevil\u2028line\u00a0", "\\u202eevil\\u2028line\\xa0"),
        ("\U000e0001 tag", "\\U000e0001 tag"),
        ("already \\n literal", "already \\n literal"),
    ],
)
def test_visible_escapes_exactly_the_non_printable_characters(raw: str, shown: str) -> None:
    assert visible(raw) == shown
    assert visible(raw).isprintable()


def test_escape_logger_attaches_one_filter_however_often_it_is_asked() -> None:
    logger = escape_logger("copra.test-text")
    escape_logger("copra.test-text")
    assert len(logger.filters) == 1


def test_escaped_logger_keeps_printable_records_and_their_args(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = escape_logger("copra.test-text")
    with caplog.at_level(logging.INFO, logger="copra.test-text"):
        logger.info("resource %s released (%d bytes)", "a/b/c", 3)
        logger.info("peer said %s", "x\ny")
    assert [r.getMessage() for r in caplog.records] == [
        "resource a/b/c released (3 bytes)", "peer said x\\ny"]


def test_proxy_describe_of_a_broker_detail_with_control_characters_is_visible() -> None:
    # r15: the broker's detail reached the proxy's log raw
    body = json.dumps({"type": ".../errors/Kind\n", "detail": "no\nsession 1 attested\x1b[31m"}
                      ).encode()
    assert KbsReply(401, "Unauthorized", body).describe() == (
        "401 Kind\\n: no\\nsession 1 attested\\x1b[31m")


def test_proxy_describe_of_a_reason_phrase_with_control_characters_is_visible() -> None:
    assert KbsReply(500, "Oops\x1b]0;title\x07", b"not json").describe() == (
        "500 Oops\\x1b]0;title\\x07")
