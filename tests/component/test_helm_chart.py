"""The Helm chart, checked with real Helm (helm_python), the Kubernetes schemas and the
Prometheus Operator models: lint, render, validate, and assert on what a cluster would run."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import __version__
from tests import tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "whatsapp-usage-exporter"
K8S_VERSIONS = ("1.30.0", "1.34.0")
NAMESPACE = "monitoring"

SECRETS = {
    "apiKey": "api-key-do-not-leak-7f3a",
    "password": "password-do-not-leak-2b9c",
    "webhook.secret": "webhook-secret-do-not-leak-91de",
    "webhook.hmacSecret": "hmac-secret-do-not-leak-4c0a",
    "webhook.forwardUrl": "https://app.example.com/hook?token=forward-token-do-not-leak-55e1",
    "metricsBearerToken": "scrape-token-do-not-leak-a17e",
}
RATE_CARD = """\
currency = "USD"
[markets.Germany]
calling_codes = ["49"]
marketing = 0.1365
"""


require = tools.module


VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "api-key-webhooks-forwarding-ingress-persistence": {
        "partnerId": "partner-1",
        "apiKey": SECRETS["apiKey"],
        "webhook": {
            "enabled": True, "secret": SECRETS["webhook.secret"],
            "forwardUrl": SECRETS["webhook.forwardUrl"], "rateCard": RATE_CARD,
        },
        "ingress": {
            "enabled": True, "className": "nginx", "hosts": ["hooks.example.com"],
            "tls": [{"hosts": ["hooks.example.com"], "secretName": "hooks-tls"}],
            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "2m"},
        },
        "persistence": {"enabled": True, "size": "2Gi", "storageClass": "fast"},
        "config": {"D360_LOG_LEVEL": "debug", "D360_SAFETY_MARGIN": 0.05,
                   "D360_CHANNEL_BALANCE_SHARES_USAGE_BUDGET": False},
    },
    "bearer-login-hmac-webhooks": {
        "partnerId": "partner-1",
        "username": "svc-user",
        "password": SECRETS["password"],
        "webhook": {"enabled": True, "hmacSecret": SECRETS["webhook.hmacSecret"]},
    },
    "existing-secret": {
        "existingSecret": "wue-credentials",
        "existingSecretKeys": {"apiKey": "D360_API_KEY", "webhookSecret": "hook"},
        "webhook": {"enabled": True},
    },
    "shards": {
        "shards": 3,
        "partnerId": "partner-1",
        "apiKey": SECRETS["apiKey"],
        "persistence": {"enabled": True},
        "webhook": {"enabled": True, "secret": SECRETS["webhook.secret"]},
        "ingress": {"enabled": True, "hosts": ["hooks.example.com"]},
    },
    "everything": {
        "partnerId": "partner-1",
        "apiKey": SECRETS["apiKey"],
        "metricsBearerToken": SECRETS["metricsBearerToken"],
        "webhook": {"enabled": True, "secret": SECRETS["webhook.secret"],
                    "hmacSecret": SECRETS["webhook.hmacSecret"], "workers": 2},
        "persistence": {"enabled": True, "existingClaim": "wue-state"},
        "serviceMonitor": {
            "enabled": True, "labels": {"release": "kube-prometheus-stack"},
            "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"],
                                   "regex": "whatsapp_exporter_api_request_duration_seconds_.*"}],
        },
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "alerts": {"monthlyBudget": 500, "clientBudgets": {"acme": 2000}},
        "dashboards": {"enabled": True, "folder": "WhatsApp"},
        "networkPolicy": {"enabled": True, "webhookFromCidrs": ["203.0.113.0/24"],
                          "extraEgress": [{"ports": [{"port": 8080, "protocol": "TCP"}]}]},
        "podDisruptionBudget": {"enabled": True},
        "serviceAccount": {"annotations": {"example.com/role": "exporter"}},
        "imagePullSecrets": [{"name": "registry"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "monitoring", "operator": "Exists", "effect": "NoSchedule"}],
        "podAnnotations": {"example.com/team": "messaging"},
        "podLabels": {"team": "messaging"},
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
    },
}


def render_texts(values: dict[str, Any], chart: Path = CHART) -> dict[str, str]:
    """Rendered templates by path, without NOTES.txt and templates whose condition was false."""
    helm_python = require("helm_python")
    with helm_python.Chart.load(str(chart)) as loaded:
        rendered: dict[str, str] = loaded.render(values, name="wue", namespace=NAMESPACE)
    return {path: text for path, text in rendered.items()
            if not path.endswith("NOTES.txt") and text.strip()}


def render(values: dict[str, Any], chart: Path = CHART) -> list[dict[str, Any]]:
    return [doc for text in render_texts(values, chart).values()
            for doc in yaml.safe_load_all(text) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet")
    assert len(found) == 1
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = workload(docs)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(docs)["env"]}


def leaf_paths(tree: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, path + ".")
        else:
            yield path


@pytest.fixture(params=sorted(VALUE_SETS), ids=str)
def value_set(request: pytest.FixtureRequest) -> dict[str, Any]:
    return VALUE_SETS[request.param]


# Lint and validation ------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, VALUE_SETS["everything"]], ids=["defaults", "everything"])
def test_helm_lint_finds_no_errors_or_warnings(values: dict[str, Any]) -> None:
    """`helm lint --strict` reports no errors and no warnings."""
    helm_python = require("helm_python")
    report = helm_python.lint(str(CHART), values, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_core_manifest_is_valid_kubernetes(value_set: dict[str, Any]) -> None:
    """Every rendered core manifest passes kubernetes-validate --strict for 1.30 and 1.34."""
    kubernetes_validate = require("kubernetes_validate")
    docs = [doc for doc in render(value_set)
            if not doc["apiVersion"].startswith("monitoring.coreos.com/")]
    assert docs
    for doc in docs:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']} on {version}: {exc}")


def test_operator_resources_match_the_prometheus_operator_models(
        value_set: dict[str, Any]) -> None:
    """ServiceMonitor and PrometheusRule parse as the operator's models with no unknown keys."""
    models = require("cloudcoil.models.prometheus_operator.v1")
    for doc in render(value_set):
        if doc["apiVersion"] != "monitoring.coreos.com/v1":
            continue
        model = getattr(models, doc["kind"]).model_validate(doc)
        # The models ignore unknown keys; a round trip that loses one is a misspelling.
        assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == doc


def test_every_resource_carries_the_standard_labels(value_set: dict[str, Any]) -> None:
    """Every resource has the app.kubernetes.io labels and the chart label."""
    for doc in render(value_set):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "whatsapp-usage-exporter"
        assert labels["app.kubernetes.io/instance"] == "wue"
        assert labels["app.kubernetes.io/version"] == __version__
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == f"whatsapp-usage-exporter-{__version__}"
        assert doc["metadata"]["namespace"] == NAMESPACE


# The pod ------------------------------------------------------------------------------------


def test_pods_meet_the_restricted_pod_security_standard(value_set: dict[str, Any]) -> None:
    """Pod and container run as UID 10360, non-root, read-only, unprivileged, RuntimeDefault."""
    pod = workload(render(value_set))["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10360, "runAsGroup": 10360, "fsGroup": 10360,
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host_namespace)
    for spec in pod["containers"] + pod.get("initContainers", []):
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "privileged" not in ctx


def test_probes_use_healthz_and_readyz_on_the_metrics_port(value_set: dict[str, Any]) -> None:
    """Startup and liveness probe /healthz, readiness probes /readyz, all on the metrics port."""
    spec = container(render(value_set))
    assert spec["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_state_and_tmp_are_writable_mounts(value_set: dict[str, Any]) -> None:
    """The state directory and /tmp are volumes, and D360_STATE_PATH points into the first."""
    docs = render(value_set)
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    assert mounts["/var/lib/whatsapp-usage-exporter"] == "state"
    assert mounts["/tmp"] == "tmp"
    assert env_of(docs)["D360_STATE_PATH"]["value"] == (
        "/var/lib/whatsapp-usage-exporter/state.sqlite3")
    assert env_of(docs)["D360_LISTEN_ADDRESS"]["value"] == "0.0.0.0:10360"


def test_resources_have_requests_and_a_memory_limit() -> None:
    """The default container requests CPU and memory and has a memory limit."""
    resources = container(render({}))["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


def test_defaults_run_one_deployment_pod_with_an_empty_dir() -> None:
    """By default a single Deployment pod, replaced with Recreate, keeps state in an emptyDir."""
    docs = render({})
    assert of_kind(docs, "StatefulSet") == []
    assert of_kind(docs, "Secret") == []
    assert of_kind(docs, "PersistentVolumeClaim") == []
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}
    assert container(docs)["image"] == f"whatsapp-usage-exporter:{__version__}"
    assert not any(name.startswith("D360_SHARD") for name in env_of(docs))


def test_image_repository_tag_and_pull_settings_are_used() -> None:
    """image.repository, image.tag, image.pullPolicy and imagePullSecrets reach the pod."""
    docs = render({"image": {"repository": "registry.example.com/wue", "tag": "1.2.3",
                             "pullPolicy": "Always"},
                   "imagePullSecrets": [{"name": "registry"}]})
    spec = container(docs)
    assert spec["image"] == "registry.example.com/wue:1.2.3"
    assert spec["imagePullPolicy"] == "Always"
    pod = workload(docs)["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]


def test_persistence_uses_a_claim() -> None:
    """With persistence the state volume is a PVC of the requested size and class."""
    docs = render(VALUE_SETS["api-key-webhooks-forwarding-ingress-persistence"])
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    volumes = {v["name"]: v for v in workload(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_existing_claim_is_used_without_making_one() -> None:
    """persistence.existingClaim mounts that claim and creates none."""
    docs = render(VALUE_SETS["everything"])
    assert of_kind(docs, "PersistentVolumeClaim") == []
    volumes = {v["name"]: v for v in workload(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"] == {"claimName": "wue-state"}


def test_shards_run_a_statefulset_with_one_pod_per_shard() -> None:
    """shards=3 makes a 3-pod StatefulSet, no Deployment, shard env from the pod index, PVC each."""
    docs = render(VALUE_SETS["shards"])
    assert of_kind(docs, "Deployment") == []
    assert of_kind(docs, "PersistentVolumeClaim") == []
    statefulset = one(docs, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 3
    env = env_of(docs)
    assert env["D360_SHARD_COUNT"]["value"] == "3"
    assert env["D360_SHARD_INDEX"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
    (template,) = statefulset["spec"]["volumeClaimTemplates"]
    assert template["metadata"]["name"] == "state"
    volumes = [v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]]
    assert "state" not in volumes  # the claim template provides it
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    assert services[statefulset["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"


def test_shards_without_persistence_keep_state_in_an_empty_dir() -> None:
    """A StatefulSet without persistence has an emptyDir state volume and no claim templates."""
    docs = render({"shards": 2})
    statefulset = one(docs, "StatefulSet")
    assert "volumeClaimTemplates" not in statefulset["spec"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}


def test_sharded_webhooks_reach_shard_zero_only() -> None:
    """With shards, webhooks go through a Service selecting pod index 0, and the Ingress uses it."""
    docs = render(VALUE_SETS["shards"])
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    main = services["wue-whatsapp-usage-exporter"]
    assert [p["name"] for p in main["spec"]["ports"]] == ["metrics"]
    hooks = services["wue-whatsapp-usage-exporter-webhook"]
    assert hooks["spec"]["selector"]["apps.kubernetes.io/pod-index"] == "0"
    assert [p["name"] for p in hooks["spec"]["ports"]] == ["webhook"]
    backend = one(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"]["name"] == "wue-whatsapp-usage-exporter-webhook"


# Credentials and settings -------------------------------------------------------------------


def test_no_secret_value_appears_outside_secrets(value_set: dict[str, Any]) -> None:
    """Secret values (and their base64) appear only in Secret objects."""
    leaked = list(SECRETS.values())
    leaked += [base64.b64encode(value.encode()).decode() for value in SECRETS.values()]
    for path, text in render_texts(value_set).items():
        for doc in yaml.safe_load_all(text):
            if not doc or doc["kind"] == "Secret":
                continue
            dumped = yaml.safe_dump(doc)
            for value in leaked:
                assert value not in dumped, f"{value!r} in {doc['kind']} from {path}"


def test_credentials_come_from_the_chart_secret() -> None:
    """The API key, webhook secret and forward URL are secretKeyRefs into the chart's Secret."""
    docs = render(VALUE_SETS["api-key-webhooks-forwarding-ingress-persistence"])
    secret = one(docs, "Secret")
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert data == {"api-key": SECRETS["apiKey"], "webhook-secret": SECRETS["webhook.secret"],
                    "webhook-forward-url": SECRETS["webhook.forwardUrl"]}
    env = env_of(docs)
    assert env["D360_PARTNER_ID"]["value"] == "partner-1"
    for name, key in [("D360_API_KEY", "api-key"), ("D360_WEBHOOK_SECRET", "webhook-secret"),
                      ("D360_WEBHOOK_FORWARD_URL", "webhook-forward-url")]:
        assert env[name]["valueFrom"]["secretKeyRef"] == {
            "name": secret["metadata"]["name"], "key": key}
    assert "D360_USERNAME" not in env
    assert "D360_WEBHOOK_HMAC_SECRET" not in env


def test_a_metrics_token_is_required_by_the_pod_and_sent_by_the_service_monitor() -> None:
    """metricsBearerToken reaches the pod from the Secret, and the ServiceMonitor sends it."""
    docs = render(VALUE_SETS["everything"])
    secret = one(docs, "Secret")
    assert base64.b64decode(secret["data"]["metrics-bearer-token"]).decode() == \
        SECRETS["metricsBearerToken"]
    ref = {"name": secret["metadata"]["name"], "key": "metrics-bearer-token"}
    assert env_of(docs)["D360_METRICS_BEARER_TOKEN"]["valueFrom"]["secretKeyRef"] == ref
    endpoint = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": ref}
    plain = render({"serviceMonitor": {"enabled": True}})
    assert "authorization" not in one(plain, "ServiceMonitor")["spec"]["endpoints"][0]
    assert "D360_METRICS_BEARER_TOKEN" not in env_of(plain)
    external = render({"existingSecret": "mine", "serviceMonitor": {
        "enabled": True, "bearerTokenFromExistingSecret": True}})
    assert one(external, "ServiceMonitor")["spec"]["endpoints"][0]["authorization"][
        "credentials"] == {"name": "mine", "key": "metrics-bearer-token"}


def test_bearer_login_and_hmac_secret_are_referenced() -> None:
    """username, password and webhook.hmacSecret reach the pod as secretKeyRefs."""
    docs = render(VALUE_SETS["bearer-login-hmac-webhooks"])
    env = env_of(docs)
    assert {"D360_USERNAME", "D360_PASSWORD", "D360_WEBHOOK_HMAC_SECRET"} <= env.keys()
    assert all("value" not in env[name] for name in
               ("D360_USERNAME", "D360_PASSWORD", "D360_WEBHOOK_HMAC_SECRET"))
    assert "D360_API_KEY" not in env


def test_existing_secret_is_referenced_with_its_key_names_and_optional() -> None:
    """With existingSecret no Secret is made; every credential is an optional ref with its key."""
    docs = render(VALUE_SETS["existing-secret"])
    assert of_kind(docs, "Secret") == []
    env = env_of(docs)
    refs = {name: item["valueFrom"]["secretKeyRef"] for name, item in env.items()
            if "secretKeyRef" in item.get("valueFrom", {})}
    assert refs["D360_API_KEY"] == {"name": "wue-credentials", "key": "D360_API_KEY",
                                    "optional": True}
    assert refs["D360_WEBHOOK_SECRET"]["key"] == "hook"
    assert refs["D360_PARTNER_ID"]["key"] == "partner-id"
    assert set(refs) == {"D360_PARTNER_ID", "D360_API_KEY", "D360_USERNAME", "D360_PASSWORD",
                         "D360_WEBHOOK_SECRET", "D360_WEBHOOK_HMAC_SECRET",
                         "D360_WEBHOOK_FORWARD_URL", "D360_METRICS_BEARER_TOKEN"}
    assert all(ref["optional"] is True and ref["name"] == "wue-credentials"
               for ref in refs.values())


def test_config_and_extra_env_become_string_env_vars() -> None:
    """config entries become env vars with string values; extraEnv is appended."""
    values = {**VALUE_SETS["api-key-webhooks-forwarding-ingress-persistence"],
              "extraEnv": [{"name": "TZ", "value": "UTC"}]}
    env = env_of(render(values))
    assert env["D360_LOG_LEVEL"]["value"] == "debug"
    assert env["D360_SAFETY_MARGIN"]["value"] == "0.05"
    assert env["D360_CHANNEL_BALANCE_SHARES_USAGE_BUDGET"]["value"] == "false"
    assert env["TZ"]["value"] == "UTC"


def test_secret_change_rolls_the_pod() -> None:
    """A changed credential changes the pod template, so the pod restarts with it."""
    def checksum(api_key: str) -> str:
        pod = workload(render({"partnerId": "p", "apiKey": api_key}))["spec"]["template"]
        return str(pod["metadata"]["annotations"]["checksum/secret"])

    assert checksum("one") != checksum("two")


# Webhooks, Service, Ingress -----------------------------------------------------------------


def test_webhook_port_only_when_webhooks_are_enabled() -> None:
    """Without webhooks neither Service nor container has a webhook port; with them both do."""
    docs = render({})
    assert [p["name"] for p in one(docs, "Service")["spec"]["ports"]] == ["metrics"]
    assert [p["name"] for p in container(docs)["ports"]] == ["metrics"]
    assert "D360_WEBHOOK_LISTEN_ADDRESS" not in env_of(docs)

    docs = render(VALUE_SETS["bearer-login-hmac-webhooks"])
    ports = {p["name"]: p for p in one(docs, "Service")["spec"]["ports"]}
    assert ports["metrics"]["port"] == 10360
    assert ports["webhook"]["port"] == 10361
    assert ports["webhook"]["targetPort"] == "webhook"
    assert {p["name"]: p["containerPort"] for p in container(docs)["ports"]} == {
        "metrics": 10360, "webhook": 10361}
    assert env_of(docs)["D360_WEBHOOK_LISTEN_ADDRESS"]["value"] == "0.0.0.0:10361"


def test_open_webhooks_need_no_secret() -> None:
    """webhook.open=true renders the receiver unauthenticated, with D360_WEBHOOK_OPEN set."""
    env = env_of(render({"webhook": {"enabled": True, "open": True}}))
    assert env["D360_WEBHOOK_OPEN"]["value"] == "true"
    assert "D360_WEBHOOK_SECRET" not in env


def test_webhooks_without_authentication_fail_with_a_clear_message() -> None:
    """webhook.enabled with no secret, HMAC secret, existingSecret or open flag fails to render."""
    helm_python = require("helm_python")
    with pytest.raises(helm_python.HelmRenderError, match=r"webhook\.enabled needs authentication"):
        render({"webhook": {"enabled": True}})


@pytest.mark.parametrize(("values", "message"), [
    ({"webhook": {"forwardUrl": "https://app.example.com/"}}, "need the webhook receiver"),
    ({"ingress": {"enabled": True, "hosts": ["h.example.com"]}}, "need the webhook receiver"),
    ({"partnerId": "p", "username": "u"}, "username and password go together"),
    ({"apiKey": "k"}, "partnerId is required"),
    ({"partnerId": "p"}, "partnerId needs apiKey"),
    ({"shards": 2, "persistence": {"enabled": True, "existingClaim": "c"}}, "cannot be shared"),
], ids=["forward-without-webhooks", "ingress-without-webhooks", "half-bearer",
        "key-without-partner", "partner-without-key", "shared-claim"])
def test_inconsistent_values_fail_to_render(values: dict[str, Any], message: str) -> None:
    """Combinations the exporter would refuse at start-up fail at render time, naming the values."""
    helm_python = require("helm_python")
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(values)


def test_rate_card_is_a_read_only_config_map_file() -> None:
    """webhook.rateCard becomes a ConfigMap mounted read-only, with D360_WEBHOOK_RATE_CARD on it."""
    docs = render(VALUE_SETS["api-key-webhooks-forwarding-ingress-persistence"])
    (card,) = [c for c in of_kind(docs, "ConfigMap") if "rate-card.toml" in c["data"]]
    assert card["data"]["rate-card.toml"].strip() == RATE_CARD.strip()
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["rate-card"]["readOnly"] is True
    path = env_of(docs)["D360_WEBHOOK_RATE_CARD"]["value"]
    assert path == mounts["rate-card"]["mountPath"] + "/rate-card.toml"
    volumes = {v["name"]: v for v in workload(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["rate-card"]["configMap"]["name"] == card["metadata"]["name"]


def test_ingress_exposes_only_the_webhook_path() -> None:
    """The Ingress routes exactly /webhook to the webhook port, with class, TLS and annotations."""
    ingress = one(render(VALUE_SETS["api-key-webhooks-forwarding-ingress-persistence"]),
                  "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["hooks.example.com"], "secretName": "hooks-tls"}]
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/proxy-body-size": "2m"}
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "hooks.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/webhook", "Exact")
    assert path["backend"]["service"]["port"] == {"name": "webhook"}


# Monitoring objects -------------------------------------------------------------------------


def test_service_monitor_scrapes_only_the_metrics_port() -> None:
    """The ServiceMonitor has one endpoint, the metrics port, with the configured labels."""
    docs = render(VALUE_SETS["everything"])
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("60s", "10s")
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    service = one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())


def test_prometheus_rule_holds_every_alert_group() -> None:
    """The PrometheusRule carries the alert groups, with per-client budget rules."""
    rule = one(render(VALUE_SETS["everything"]), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = [r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]]
    assert alerts.count("WhatsAppMonthlySpendOverBudget") == 2
    assert "WhatsAppExporterDown" in alerts


def test_monitoring_objects_are_off_by_default() -> None:
    """No CRD objects, NetworkPolicy, PDB or dashboards render by default."""
    kinds = {doc["kind"] for doc in render({})}
    assert kinds == {"Deployment", "Service", "ServiceAccount"}


def _chart_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "whatsapp-usage-exporter"
    shutil.copytree(CHART, copy)
    return copy


def _dashboard_maps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in of_kind(docs, "ConfigMap")
            if c["metadata"]["labels"].get("grafana_dashboard") == "1"]


def test_dashboards_render_nothing_without_json_files(tmp_path: Path) -> None:
    """With no dashboards/*.json in the chart, dashboards.enabled renders no ConfigMap."""
    chart = _chart_copy(tmp_path)
    shutil.rmtree(chart / "dashboards", ignore_errors=True)
    assert _dashboard_maps(render({"dashboards": {"enabled": True}}, chart)) == []


def test_dashboards_become_one_labelled_config_map_per_json_file(tmp_path: Path) -> None:
    """Each dashboards/*.json file becomes a ConfigMap with the sidecar label and folder."""
    chart = _chart_copy(tmp_path)
    (chart / "dashboards").mkdir(exist_ok=True)
    placeholder = '{"title": "Placeholder {{ not a template }}", "panels": []}'
    (chart / "dashboards" / "Placeholder Test.json").write_text(placeholder)
    files = sorted((chart / "dashboards").glob("*.json"))
    docs = render({"dashboards": {"enabled": True, "folder": "WhatsApp"}}, chart)
    maps = _dashboard_maps(docs)
    assert len(maps) == len(files)
    by_file = {key: (c, text) for c in maps for key, text in c["data"].items()}
    assert set(by_file) == {f.name for f in files}
    config_map, text = by_file["Placeholder Test.json"]
    assert text == placeholder  # the file is copied, never templated
    assert config_map["metadata"]["name"] == (
        "wue-whatsapp-usage-exporter-dashboard-placeholder-test")
    assert all(c["metadata"]["annotations"]["grafana_folder"] == "WhatsApp" for c in maps)
    custom = _dashboard_maps(render({"dashboards": {"enabled": True, "labelValue": "yes"}}, chart))
    assert custom == []  # the label value is configurable


def test_network_policy_limits_ingress_and_egress() -> None:
    """Metrics from the selected peers, webhooks from the CIDRs, egress to DNS, 443 and extras."""
    policy = one(render(VALUE_SETS["everything"]), "NetworkPolicy")
    metrics, webhook = policy["spec"]["ingress"]
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert webhook["ports"] == [{"port": "webhook", "protocol": "TCP"}]
    assert webhook["from"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    egress_ports = [port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]]
    assert egress_ports == [53, 53, 443, 8080]


def test_pod_disruption_budget_allows_one_pod_down() -> None:
    """The PDB lets a drain evict the single pod (maxUnavailable 1), or uses minAvailable."""
    pdb = one(render(VALUE_SETS["everything"]), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    pdb = one(render({"shards": 4, "podDisruptionBudget": {"enabled": True, "minAvailable": 3}}),
              "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 3, "selector": pdb["spec"]["selector"]}


def test_service_account_has_no_token() -> None:
    """The chart's ServiceAccount carries its annotations and mounts no API token."""
    docs = render(VALUE_SETS["everything"])
    account = one(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["annotations"] == {"example.com/role": "exporter"}
    pod = workload(docs)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    other = workload(render({"serviceAccount": {"create": False, "name": "shared"}}))
    assert other["spec"]["template"]["spec"]["serviceAccountName"] == "shared"


def test_notes_tell_how_to_reach_metrics_and_webhook() -> None:
    """NOTES.txt names the port-forward for /metrics and the webhook URL."""
    helm_python = require("helm_python")
    with helm_python.Chart.load(str(CHART)) as loaded:
        rendered = loaded.render(VALUE_SETS["api-key-webhooks-forwarding-ingress-persistence"],
                                 name="wue", namespace=NAMESPACE)
    notes = rendered["whatsapp-usage-exporter/templates/NOTES.txt"]
    assert "port-forward svc/wue-whatsapp-usage-exporter 10360:10360" in notes
    assert "https://hooks.example.com/webhook" in notes
    assert SECRETS["webhook.forwardUrl"] not in notes


# Values schema and documentation ------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"shards": "3"},
    {"shards": -1},
    {"shards": 0},
    {"replicaCount": 2},
    {"image": {"tagg": "1.0"}},
    {"image": {"pullPolicy": "Sometimes"}},
    {"service": {"type": "ExternalName"}},
    {"service": {"ports": {"metrics": 70000, "webhook": 10361}}},
    {"service": {"ports": {"metrics": 0, "webhook": 10361}}},
    {"webhook": {"enabled": "yes"}},
    {"webhook": {"forwardUrl": "ftp://example.com/"}},
    {"persistence": {"size": "lots"}},
    {"persistence": {"accessModes": ["ReadWriteSometimes"]}},
    {"config": {"LOG_LEVEL": "debug"}},
    {"config": {"D360_API_KEY": "in-plain-env"}},
    {"config": {"D360_STATE_PATH": "/elsewhere"}},
    {"serviceMonitor": {"interval": "a minute"}},
    {"alerts": {"monthlyBudget": -5}},
    {"alerts": {"spendSpikeFactor": 1}},
    {"alerts": {"clientBudgets": {"acme": "lots"}}},
    {"networkPolicy": {"webhookFromCidrs": ["anywhere"]}},
], ids=lambda bad: yaml.safe_dump(bad, default_flow_style=True).strip())
def test_schema_rejects_bad_values(bad: dict[str, Any]) -> None:
    """values.schema.json rejects wrong types, unknown keys, out-of-range numbers and bad enums."""
    helm_python = require("helm_python")
    key, value = next(iter(bad.items()))
    while isinstance(value, dict):
        key, value = next(iter(value.items()))
    with helm_python.Chart.load(str(CHART)) as loaded, pytest.raises(
            helm_python.HelmValuesError, match=key):  # the message names the offending key
        loaded.validate_schema(bad)


def test_schema_accepts_every_value_set(value_set: dict[str, Any]) -> None:
    """The value sets the tests render are valid against the schema."""
    helm_python = require("helm_python")
    with helm_python.Chart.load(str(CHART)) as loaded:
        loaded.validate_schema(value_set)


def test_readme_documents_every_value() -> None:
    """Every leaf key path of values.yaml is named in the chart's README."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    missing = [path for path in leaf_paths(values) if f"`{path}`" not in readme]
    assert missing == []


def test_chart_metadata() -> None:
    """Chart.yaml is apiVersion v2 with the package's version as appVersion, and Kubernetes 1.28
    or later."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == __version__
    assert chart["kubeVersion"] == ">=1.28-0"


def test_webhook_workers_are_passed_only_when_asked_for() -> None:
    assert env_of(render(VALUE_SETS["everything"]))["D360_WEBHOOK_WORKERS"]["value"] == "2"
    assert "D360_WEBHOOK_WORKERS" not in env_of(
        render(VALUE_SETS["api-key-webhooks-forwarding-ingress-persistence"]))
