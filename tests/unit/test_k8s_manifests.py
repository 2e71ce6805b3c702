"""The Kubernetes manifests agree with the code: settings they pass exist, probes hit real routes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from payments_app.worker import app

K8S = Path(__file__).parents[2] / "k8s"
DOCS = [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
SOURCES = (Path(__file__).parents[2] / "payments_app").rglob("*.py")
READ_ENV = {name for path in SOURCES for name in re.findall(r'os\.environ\.get\("([A-Z_]+)"', path.read_text())}


def of_kind(kind: str) -> list[dict]:
    return [doc for doc in DOCS if doc["kind"] == kind]


def test_every_configured_variable_is_read_by_the_app() -> None:
    (config,) = of_kind("ConfigMap")
    assert set(config["data"]) <= READ_ENV


def test_probes_use_routes_the_app_serves() -> None:
    routes = {resource.canonical for resource in app.web.web_app.router.resources()}
    (statefulset,) = of_kind("StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in routes


def test_workers_advertise_their_headless_service_name() -> None:
    (statefulset,) = of_kind("StatefulSet")
    command = " ".join(statefulset["spec"]["template"]["spec"]["containers"][0]["command"])
    headless = [s for s in of_kind("Service") if s["spec"].get("clusterIP") == "None"]
    assert statefulset["spec"]["serviceName"] == headless[0]["metadata"]["name"]
    assert f"--web-host $(POD_NAME).{headless[0]['metadata']['name']}." in command
