"""Peer-supplied text made safe to log and to send back: control characters made visible.

The attestation path handles strings that its peers chose: certificate names and
product names from evidence, error details from a key broker, reason phrases of HTTP
replies. Written raw into a log, a newline forges a line (``session ... attested``);
written to a terminal, an ESC sequence rewrites the screen. :func:`visible` replaces
every character that is not printable (Unicode categories Cc, Cf, Zl, Zp, Zs other
than the space, Cs, Co, Cn: what ``str.isprintable`` rejects) by its Python escape,
``\\n``, ``\\x1b``, ``\\u202e``, so the text keeps its meaning for a reader and
can no longer act on a log or a terminal. Backslashes are left alone: text that
already holds ``\\n`` literally reads the same, and forges nothing.

Where it is applied (docs/attestation-protocol.md, "Peer-supplied text"): every
:class:`~copra.attest.kbs.broker.KbsError` detail, the names and product strings in
:mod:`copra.attest.verify`'s messages, the proxy's report of a broker's reply, and,
as a last line of defence, every record of the ``copra.kbs`` and ``copra.aproxy``
loggers (:class:`VisibleFilter`), so a string that reaches a log by a path not listed
here is escaped too.

Stateless; safe from any thread.
"""

from __future__ import annotations

import logging
from typing import Final

_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with every non-printable character replaced by its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


class VisibleFilter(logging.Filter):
    """Renders a record's message with :func:`visible` (tracebacks are left as they are:
    they are the program's own text, and their line breaks are meant)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            record.msg = visible(message)
            record.args = None
        return True


def escape_logger(name: str) -> logging.Logger:
    """The logger ``name`` with a :class:`VisibleFilter` attached (once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, VisibleFilter) for f in logger.filters):
        logger.addFilter(VisibleFilter())
    return logger
