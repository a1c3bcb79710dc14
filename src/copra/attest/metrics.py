"""Counters and gauges in the Prometheus text exposition format (version 0.0.4).

The key broker serves them at ``GET /metrics`` and the attestation proxy at
``copra aproxy --metrics HOST:PORT`` (docs/attestation-protocol.md, "Metrics"), so a
Prometheus server, or ``curl``, reads how many attestations were made and refused, why,
and what the connection limits closed. The format (what :func:`render` writes):

    # HELP kbs_attestation_requests_total Attestation requests (POST /kbs/v0/attest).
    # TYPE kbs_attestation_requests_total counter
    kbs_attestation_requests_total 3
    copra_kbs_attestation_refusals_total{reason="MeasurementMismatch"} 1

one ``# HELP`` and one ``# TYPE`` line per metric, then one line per sample; label
values escape backslash, double quote and newline, HELP text backslash and newline.

Invariants: metric and label names are the program's own constants, checked against
the format's grammar when a :class:`Metric` is made; label *values* are never peer
text, only values from a fixed set (error kinds, TEE names kbs-types knows, resource
paths in the store, HTTP statuses), so no peer can grow the number of series.

Locking: the dataclasses are frozen and :func:`render` is pure; :class:`MetricsServer`
calls its source from its own thread, so the source must be thread-safe.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Final, Literal

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Labels = tuple[tuple[str, str], ...]


def labels(**pairs: str) -> Labels:
    """Label pairs in the order given: ``labels(reason="TcbTooOld")``."""
    return tuple(pairs.items())


@dataclass(frozen=True)
class Metric:
    """One metric: its samples map label pairs (``()`` for none) to values."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    samples: Mapping[Labels, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _METRIC_NAME.fullmatch(self.name):
            raise ValueError(f"{self.name!r} is not a metric name")
        for pairs in self.samples:
            for name, _ in pairs:
                if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                    raise ValueError(f"{name!r} is not a label name")

    @classmethod
    def single(cls, name: str, kind: Literal["counter", "gauge"], help: str,
               value: float) -> Metric:
        """A metric with one sample and no labels."""
        return cls(name, kind, help, {(): value})


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(metrics: Iterable[Metric]) -> str:
    """The text exposition of ``metrics``, in the order given (samples sorted)."""
    lines: list[str] = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for pairs, value in sorted(metric.samples.items()):
            if pairs:
                text = ",".join(f'{name}="{_escape_value(v)}"' for name, v in pairs)
                lines.append(f"{metric.name}{{{text}}} {_number(value)}")
            else:
                lines.append(f"{metric.name} {_number(value)}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` on ``host:port`` in a daemon thread, for a process that has no
    HTTP server of its own (``copra aproxy --metrics``); a context manager.

    One request at a time (``http.server.HTTPServer``), each with a 5-second socket
    timeout, so a slow or silent client holds it at most that long; any other path or
    method is answered 404 or 501. Meant for loopback or a trusted network: it serves
    counters, nothing secret, and has no authentication.
    """

    def __init__(self, host: str, port: int, source: Callable[[], list[Metric]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = 5
            server_version = "copra-metrics"

            def do_GET(self) -> None:  # http.server dispatches on this name
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = render(source()).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes are not news

        self._server = HTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="copra-metrics", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/metrics"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
