"""The chart's spendBudgets value: a ConfigMap file the exporter reads as D360_SPEND_BUDGETS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter.spend.budgets import load_spend_budgets
from tests.component.test_helm_chart import (
    K8S_VERSIONS,
    container,
    env_of,
    of_kind,
    render,
    require,
    workload,
)

BUDGETS = """\
[default]
amount = 500
currency = "EUR"
[clients.acme]
amount = 2000
currency = "EUR"
"""


@pytest.mark.parametrize("shards", [1, 3], ids=["deployment", "statefulset"])
def test_budgets_are_a_read_only_config_map_file_the_exporter_reads(
        shards: int, tmp_path: Path) -> None:
    """spendBudgets becomes a ConfigMap mounted read-only, D360_SPEND_BUDGETS names the file in
    it, the file loads as the exporter loads it, and a change of budgets rolls the pods."""
    docs = render({"spendBudgets": BUDGETS, "shards": shards})
    (config,) = [c for c in of_kind(docs, "ConfigMap") if "spend-budgets.toml" in c["data"]]
    text = config["data"]["spend-budgets.toml"]
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["spend-budgets"]["readOnly"] is True
    path = env_of(docs)["D360_SPEND_BUDGETS"]["value"]
    assert path == mounts["spend-budgets"]["mountPath"] + "/spend-budgets.toml"
    volumes = {v["name"]: v for v in workload(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["spend-budgets"]["configMap"]["name"] == config["metadata"]["name"]
    file = tmp_path / "spend-budgets.toml"
    file.write_text(text)
    assert load_spend_budgets(file).clients["acme"].amount == 2000

    other = render({"spendBudgets": BUDGETS.replace("2000", "2500"), "shards": shards})
    annotations = workload(docs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/spend-budgets"] != (
        workload(other)["spec"]["template"]["metadata"]["annotations"]["checksum/spend-budgets"])


def test_no_budgets_no_file() -> None:
    """By default there is no budgets ConfigMap, mount or setting."""
    docs = render({})
    assert not [c for c in of_kind(docs, "ConfigMap") if "spend-budgets.toml" in c["data"]]
    assert "D360_SPEND_BUDGETS" not in env_of(docs)
    assert "spend-budgets" not in {m["name"] for m in container(docs)["volumeMounts"]}


def test_the_budgets_config_map_is_valid_kubernetes() -> None:
    """The ConfigMap and the workload that mounts it pass kubernetes-validate --strict."""
    kubernetes_validate = require("kubernetes_validate")
    docs: list[dict[str, Any]] = render({"spendBudgets": BUDGETS})
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_a_non_string_budgets_value_is_refused_by_the_schema() -> None:
    """spendBudgets is TOML text; a map (as if it were YAML) fails the values schema."""
    helm_python = require("helm_python")
    with pytest.raises(helm_python.HelmValuesError, match="spendBudgets"):
        render({"spendBudgets": {"default": {"amount": 1}}})
