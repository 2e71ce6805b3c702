"""One settings reader: only `payments_app/settings.py` reads the environment, and README's configuration table,
`k8s/configmap.yaml` and the `Settings` fields name the same variables with the same defaults."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from payments_app.settings import DERIVED, bootstrap_servers, load_settings, variables

ROOT = Path(__file__).parents[2]
PRODUCT = ("payments_app", "tables", "web")
ROW = re.compile(r"^\| `(?P<env>[A-Z_]+)` \| (?P<default>[^|]+) \| (?P<meaning>[^|]+) \|$")


def environment_reads(source: str) -> list[int]:
    """Lines that touch the process environment: `os.environ`, `os.getenv`, `environ` imported from os."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "environb"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno for alias in node.names if alias.name in ("environ", "getenv", "environb")]
    return lines


def test_no_product_module_but_settings_reads_the_environment() -> None:
    readers = {
        str(path.relative_to(ROOT)): lines
        for package in PRODUCT
        for path in sorted((ROOT / package).rglob("*.py"))
        if (lines := environment_reads(path.read_text()))
    }
    assert readers == {"payments_app/settings.py": readers.get("payments_app/settings.py")}
    assert readers["payments_app/settings.py"], "settings.py reads the environment"


def test_the_check_sees_each_way_of_reading_the_environment() -> None:
    for source in ["import os\nos.environ.get('X')", "import os\nos.getenv('X')", "from os import environ"]:
        assert environment_reads(source), source
    assert not environment_reads("import os\nos.path.join('a', 'b')")


def readme_table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    return {m["env"]: m["default"].strip() for line in section.splitlines() if (m := ROW.match(line.strip()))}


def documented_default(default: str | None) -> str:
    if default is None:
        return "(required)"
    return "(derived)" if default == DERIVED else f"`{default}`"


def test_readme_lists_every_setting_with_its_default() -> None:
    expected = {env: documented_default(field.metadata["default"]) for env, field in variables().items()}
    assert readme_table() == expected


def test_the_configmap_sets_only_settings_and_values_they_accept() -> None:
    data = yaml.safe_load((ROOT / "k8s" / "configmap.yaml").read_text())["data"]
    assert set(data) <= set(variables()), set(data) - set(variables())
    settings = load_settings({**data, "PAYMENTS_ADMIN_TOKEN": "x" * 32})
    assert (settings.partitions, settings.create_topics) == (int(data["PAYMENTS_PARTITIONS"]), False)


def test_defaults_and_derived_values() -> None:
    settings = load_settings({})
    assert (settings.partitions, settings.web_port, settings.create_topics, settings.admin_token) == (
        8,
        6066,
        True,
        None,
    )
    assert settings.transaction_timeout_s == settings.session_timeout_s == 10.0
    assert settings.instance_id.endswith("-6066")
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    tuned = load_settings({"PAYMENTS_SESSION_TIMEOUT_S": "6", "PAYMENTS_CREATE_TOPICS": "no", "PAYMENTS_WEB_PORT": "7"})
    assert (tuned.transaction_timeout_s, tuned.create_topics, tuned.instance_id.endswith("-7")) == (6.0, False, True)
    assert load_settings({"PAYMENTS_MODEL": ""}).model == "concurrent"  # empty counts as unset


def test_a_model_it_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        load_settings({"PAYMENTS_MODEL": "eventual"})


def test_broker_urls_become_bootstrap_servers() -> None:
    assert bootstrap_servers("kafka://127.0.0.1:9092") == "127.0.0.1:9092"
    assert bootstrap_servers("kafka://a:1;b:2") == "a:1,b:2"
    with pytest.raises(ValueError, match="kafka://"):
        bootstrap_servers("127.0.0.1:9092")
