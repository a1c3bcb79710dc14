"""copra.attest.metrics: the Prometheus text format, read back by prometheus_client's
parser (a reader we did not write), and the broker's /metrics after real exchanges."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from kbs_helpers import RESOURCE, _auth, _body
from prometheus_client.parser import text_string_to_metric_families

from copra.attest.kbs.broker import KeyBroker
from copra.attest.kbs.store import ReferenceValues, Store
from copra.attest.metrics import CONTENT_TYPE, Metric, MetricsServer, labels, render
from copra.hw.snp import SnpFirmware, SnpGuest


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the official parser reads from ``text``: (name, labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_render_counter_and_gauge_parse_with_prometheus_client() -> None:
    text = render([
        Metric.single("copra_things_total", "counter", "Things done.", 3),
        Metric("copra_open", "gauge", "Open now.", {labels(state="a"): 1, labels(state="b"): 2}),
    ])
    assert text == (
        "# HELP copra_things_total Things done.\n"
        "# TYPE copra_things_total counter\n"
        "copra_things_total 3\n"
        "# HELP copra_open Open now.\n"
        "# TYPE copra_open gauge\n"
        'copra_open{state="a"} 1\n'
        'copra_open{state="b"} 2\n')
    assert _samples(text) == {("copra_things_total", ()): 3.0,
                              ("copra_open", (("state", "a"),)): 1.0,
                              ("copra_open", (("state", "b"),)): 2.0}


def test_render_escapes_label_values_and_help_as_the_format_requires() -> None:
    value = 'a "quoted" back\\slash\nnewline'
    text = render([Metric("copra_x_total", "counter", "line one\nline \\ two",
                          {labels(path=value): 1.5})])
    assert "\n# HELP copra_x_total line one\\nline \\\\ two\n" in "\n" + text
    families = list(text_string_to_metric_families(text))
    assert families[0].documentation == "line one\nline \\ two"
    assert families[0].samples[0].labels == {"path": value}
    assert families[0].samples[0].value == 1.5


@pytest.mark.parametrize("name", ["1abc", "a-b", "", "a b"])
def test_metric_with_invalid_name_raises_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="metric name"):
        Metric.single(name, "counter", "x", 1)


@pytest.mark.parametrize("label", ["__reserved", "a-b", "1a"])
def test_metric_with_invalid_label_name_raises_value_error(label: str) -> None:
    with pytest.raises(ValueError, match="label name"):
        Metric("copra_x", "gauge", "x", {((label, "v"),): 1})


def test_metrics_server_serves_metrics_and_404_elsewhere() -> None:
    metric = Metric.single("copra_up", "gauge", "Up.", 1)
    with MetricsServer("127.0.0.1", 0, lambda: [metric]) as server:
        reply = requests.get(server.url, timeout=10)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == CONTENT_TYPE
        assert _samples(reply.text) == {("copra_up", ()): 1.0}
        assert requests.get(server.url.replace("/metrics", "/x"), timeout=10).status_code == 404


def test_kbs_metrics_count_attestations_refusals_and_releases(
    client: FlaskClient, broker: KeyBroker, store: Store, chip: SnpFirmware, guest: SnpGuest,
    key: Any,
) -> None:
    assert client.post("/kbs/v0/attest", json=_body(chip, guest, _auth(client), key)
                       ).status_code == 200
    assert client.get(RESOURCE).status_code == 200
    values = store.reference_values()
    store.set_reference_values(ReferenceValues(measurements=frozenset({bytes(48)})))
    assert client.post("/kbs/v0/attest", json=_body(chip, guest, _auth(client), key)
                       ).status_code == 401
    store.set_reference_values(values)
    client.post("/kbs/v0/auth", json={"version": "0.9.0", "tee": "snp", "extra-params": ""})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    samples = _samples(response.get_data(as_text=True))
    assert samples[("kbs_auth_requests_total", ())] == 3
    assert samples[("kbs_auth_successes_total", ())] == 2
    assert samples[("copra_kbs_auth_errors_total", (("reason", "ProtocolVersion"),))] == 1
    assert samples[("kbs_attestation_requests_total", ())] == 2
    assert samples[("kbs_attestation_successes_total", (("tee_type", "snp"),))] == 1
    assert samples[("copra_kbs_attestation_refusals_total",
                    (("reason", "MeasurementMismatch"),))] == 1
    assert samples[("kbs_resource_reads_total",
                    (("resource_path", "default/sample/test"),))] == 1
    assert samples[("kbs_policy_approvals_total", ())] == 1
    assert samples[("copra_kbs_sessions", (("state", "attested"),))] == 1
    assert samples[("copra_kbs_sessions", (("state", "unattested"),))] == 1
    assert samples[("copra_kbs_http_responses_total", (("status", "401"),))] == 2
    assert samples[("kbs_http_requests_total", ())] == 6
