"""deploy/: compose, Kubernetes manifests and Dockerfile are well formed and use only real settings."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from compat_api.auth import TokenAuthenticator, load_tokens_file
from compat_api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
FIELDS = set(Settings.model_fields)
ENV_VAR = re.compile(r"\bFLOWTIME_[A-Z0-9_]+\b")


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_all(path)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests() if doc.get("kind") == kind]


def compose() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def containers() -> list[dict[str, Any]]:
    (sts,) = by_kind("StatefulSet")
    result: list[dict[str, Any]] = sts["spec"]["template"]["spec"]["containers"]
    return result


# -- settings names --------------------------------------------------------------------------------
def deploy_texts() -> list[Path]:
    return [p for p in DEPLOY.rglob("*") if p.is_file()] + [ROOT / "docs" / "operations.md"]


def test_every_flowtime_env_var_is_a_settings_field() -> None:
    seen = set()
    for path in deploy_texts():
        for var in ENV_VAR.findall(path.read_text(encoding="utf-8")):
            seen.add(var)
            assert var.removeprefix("FLOWTIME_").lower() in FIELDS, f"{path.name}: {var}"
    assert {"FLOWTIME_KAFKA_BOOTSTRAP", "FLOWTIME_KAFKA_IDEMPOTENCE", "FLOWTIME_TOKENS_FILE"} <= seen


def test_compose_and_k8s_env_blocks_name_settings_fields() -> None:
    envs: list[str] = list(compose()["services"]["flowtime"]["environment"])
    envs += [e["name"] for c in containers() for e in c.get("env", [])]
    assert envs
    for name in envs:
        assert name.startswith("FLOWTIME_") and name.removeprefix("FLOWTIME_").lower() in FIELDS, name


def test_toml_config_keys_are_settings_fields_and_validate() -> None:
    (cm,) = by_kind("ConfigMap")
    text = cm["data"]["config.toml"]
    values = tomllib.loads(text)
    assert values
    assert set(values) <= FIELDS, set(values) - FIELDS
    Settings.model_validate(values)
    commented = re.findall(r"^#\s*([a-z_]+)\s*=", text, re.M)
    assert set(commented) <= FIELDS, set(commented) - FIELDS
    uncommented = tomllib.loads(re.sub(r"^#\s*(?=[a-z_]+\s*=)", "", text, flags=re.M))
    Settings.model_validate(uncommented)


def test_serve_flags_are_settings_fields() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    flags = re.findall(r'"--([a-z][a-z-]*)"', dockerfile)
    flags += [f.removeprefix("--") for c in containers() for f in c.get("args", []) if f.startswith("--")]
    assert "data-dir" in flags
    for flag in flags:
        assert flag.replace("-", "_") in FIELDS, flag


# -- Dockerfile ------------------------------------------------------------------------------------
def test_dockerfile_runs_as_non_root_with_a_readiness_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK\b.*\\\n.*/readyz", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    cmd = re.search(r"^CMD (\[.*\])", text, re.M)
    assert cmd is not None
    assert yaml.safe_load(cmd.group(1))[:2] == ["flowtime", "serve"]
    assert "--host" in cmd.group(1) and "0.0.0.0" in cmd.group(1)
    assert "FLOWTIME_TOKENS_FILE" in text, "non-loopback needs tokens"


# -- compose ---------------------------------------------------------------------------------------
def test_compose_services() -> None:
    services = compose()["services"]
    assert {"kafka", "flowtime", "prometheus"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert "healthcheck" in kafka


def test_compose_flowtime_is_configured_for_kafka() -> None:
    flowtime = compose()["services"]["flowtime"]
    env = flowtime["environment"]
    assert env["FLOWTIME_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert str(env["FLOWTIME_KAFKA_IDEMPOTENCE"]).lower() == "true"
    assert env["FLOWTIME_KAFKA_TELEMETRY_TOPIC"] and env["FLOWTIME_KAFKA_EVENTS_TOPIC"]
    assert "/readyz" in " ".join(flowtime["healthcheck"]["test"])
    assert flowtime["build"]["dockerfile"] == "deploy/Dockerfile"
    assert any(str(v).endswith(":/data") for v in flowtime["volumes"])
    secrets = compose()["secrets"]
    for name in flowtime["secrets"]:
        assert (DEPLOY / secrets[name]["file"]).is_file()


def test_prometheus_scrapes_flowtime_with_a_token() -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "flowtime"]
    assert job["metrics_path"] == "/metrics"
    assert "flowtime:8080" in job["static_configs"][0]["targets"]
    assert job["authorization"]["credentials_file"]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert any(m.startswith("./prometheus.yml:") for m in mounts)


# -- Kubernetes ------------------------------------------------------------------------------------
def test_every_manifest_parses_and_has_kind_and_name() -> None:
    docs = manifests()
    assert {"StatefulSet", "Service", "Secret", "ConfigMap"} <= {d["kind"] for d in docs}
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind")
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"]


def test_statefulset_has_pvc_probes_resources_and_non_root() -> None:
    (sts,) = by_kind("StatefulSet")
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (claim,) = spec["volumeClaimTemplates"]
    (container,) = pod["containers"]
    assert {"mountPath": "/data", "name": claim["metadata"]["name"]} in container["volumeMounts"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for key in ("cpu", "memory"):
        assert container["resources"]["requests"][key]
        assert container["resources"]["limits"][key]
    services = {s["metadata"]["name"] for s in by_kind("Service")}
    assert spec["serviceName"] in services
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_statefulset_mounts_the_secret_and_configmap_it_points_at() -> None:
    (sts,) = by_kind("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (secret,) = by_kind("Secret")
    (cm,) = by_kind("ConfigMap")
    secret_vol = next(
        n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]
    )
    config_vol = next(n for n, v in volumes.items() if v.get("configMap", {}).get("name") == cm["metadata"]["name"])
    (secret_key,) = secret["stringData"]
    assert env["FLOWTIME_TOKENS_FILE"] == f"{mounts[secret_vol]}/{secret_key}"
    assert env["FLOWTIME_CONFIG"] == f"{mounts[config_vol]}/config.toml"


def test_kustomization_lists_existing_files() -> None:
    (kust,) = by_kind("Kustomization")
    for name in kust["resources"]:
        assert (K8S / name).is_file(), name


@pytest.mark.parametrize("path", ["README.md", "Dockerfile", "compose.yaml", "prometheus.yml"])
def test_deploy_files_exist(path: str) -> None:
    assert (DEPLOY / path).is_file()


def test_shipped_token_files_load(tmp_path: Path) -> None:
    secrets = compose()["secrets"]
    grants = load_tokens_file(DEPLOY / secrets["flowtime_tokens"]["file"])
    prometheus_token = (DEPLOY / secrets["prometheus_token"]["file"]).read_text(encoding="utf-8").strip()
    assert any(g.allows_scope("read") for g in grants)
    assert any(g.allows_scope("admin") for g in grants)
    TokenAuthenticator(grants).check(prometheus_token, "metrics", None)  # Prometheus may scrape /metrics
    (secret,) = by_kind("Secret")
    (body,) = secret["stringData"].values()
    mounted = tmp_path / "tokens"  # no suffix, as mounted: JSON
    mounted.write_text(body, encoding="utf-8")
    assert load_tokens_file(mounted)
