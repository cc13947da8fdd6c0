"""GET /metrics read as Prometheus samples."""

from __future__ import annotations

from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

P = "admin_service"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, **kwargs: Any) -> Samples:
    response = requests.get(f"{url}/metrics", timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of this name whose labels include these (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)
