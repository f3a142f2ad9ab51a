"""Loading plugins: the documented example, site plugins, failures, disabling, config checks."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from starlette.testclient import TestClient

import lanthorn
from lanthorn.config import Config, ConfigError, load_config

EXAMPLE = Path(__file__).parents[1] / "docs" / "example-plugin"
CT_SMALL = Path(get_testdata_file("CT_small.dcm")).read_bytes()
BROKEN_PLUGIN = 'raise ImportError("needs a library that is not installed")\n'


@pytest.fixture
def example_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example distribution importable without installing it."""
    monkeypatch.syspath_prepend(str(EXAMPLE))


@contextmanager
def client_for(config: Config) -> Iterator[TestClient]:
    """A server on ``config`` (for configs the lanthorn_config marker cannot express)."""
    server = lanthorn.Server(config, load_entry_points=False)
    try:
        with TestClient(server.app, client=("127.0.0.1", 50000)) as client:
            yield client
    finally:
        server.close()


def write_config(folder: Path, **options: object) -> Path:
    path = folder / "lanthorn.json"
    path.write_text(json.dumps({"StorageDirectory": str(folder / "storage"), **options}))
    return path


@pytest.mark.usefixtures("example_importable")
@pytest.mark.lanthorn_config(Plugins=["lanthorn_hello"], Hello={"Greeting": "Hi"})
def test_the_example_plugin_answers_hello_with_the_instance_count(
        lanthorn_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    assert lanthorn_client.get("/hello").json() == {
        "Greeting": "Hi", "Instances": 0, "StoredSinceStartup": 0}
    assert lanthorn_client.post("/instances", content=CT_SMALL).status_code == 200
    assert lanthorn_client.get("/hello").json() == {
        "Greeting": "Hi", "Instances": 1, "StoredSinceStartup": 1}
    info = lanthorn_client.get("/plugins/lanthorn_hello").json()
    assert (info["Status"], info["Source"], info["Version"]) == ("loaded", "config", "0.1.0")
    assert "unknown configuration key" not in caplog.text  # "Hello" is a declared section


def test_the_example_plugin_own_tests_pass() -> None:
    """Its tests use the fixtures Lanthorn publishes through pytest11, as the guide says."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE)],
        cwd=EXAMPLE, env={**os.environ, "PYTHONPATH": str(EXAMPLE)},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_a_site_plugin_that_fails_to_import_is_skipped_and_shown_failed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "broken.py").write_text(BROKEN_PLUGIN)
    # A relative .py path is relative to the configuration file.
    config = load_config(write_config(tmp_path, Plugins=["broken.py"]), environ={})
    with client_for(config) as client:
        info = client.get("/plugins/broken").json()
        assert client.get("/system").status_code == 200
    assert info["Status"] == "failed"
    assert info["Error"] == "ImportError: needs a library that is not installed"
    assert 'plugin "broken" failed to load and is skipped' in caplog.text


@pytest.mark.usefixtures("example_importable")
@pytest.mark.lanthorn_config(Plugins=["lanthorn_hello"], DisabledPlugins=["lanthorn_hello"])
def test_a_disabled_plugin_is_not_loaded_and_shown_disabled(lanthorn_client: TestClient) -> None:
    assert lanthorn_client.get("/plugins/lanthorn_hello").json()["Status"] == "disabled"
    assert lanthorn_client.get("/hello").status_code == 404


def test_lanthorn_plugins_lists_built_ins_and_site_plugins(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN_PLUGIN)
    config = write_config(tmp_path, Plugins=["lanthorn_hello", str(broken)])
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LANTHORN")}
    result = subprocess.run(
        [sys.executable, "-m", "lanthorn", "plugins", "--config", str(config)],
        env={**environment, "PYTHONPATH": str(EXAMPLE)}, capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()}
    for builtin in ("errors", "filesystem", "routes", "sqlite"):
        assert rows[builtin][2:] == ["builtin", "loaded"]
    assert rows["lanthorn_hello"][1:] == ["0.1.0", "config", "loaded"]
    assert rows["broken"][1:4] == ["config", "failed:", "ImportError:"]


@pytest.mark.parametrize("section", [{"EnableIndex": True}, {"EnableIndex": True,
                                                             "EnableStorage": False}])
def test_enabling_an_official_plugin_that_is_missing_names_its_package(
        lanthorn_config: Config, section: dict[str, bool]) -> None:
    with pytest.raises(ConfigError, match="pip install lanthorn-postgres"):
        lanthorn.Server(lanthorn_config.with_overrides(PostgreSQL=section),
                        load_entry_points=False)


def test_a_disabled_official_section_is_accepted(lanthorn_config: Config) -> None:
    server = lanthorn.Server(lanthorn_config.with_overrides(PostgreSQL={"EnableIndex": False}),
                             load_entry_points=False)
    server.close()


def test_an_unknown_top_level_key_warns_with_the_closest_key(
        lanthorn_config: Config, caplog: pytest.LogCaptureFixture) -> None:
    config = lanthorn_config.with_overrides(StorageDirectroy="elsewhere")
    with caplog.at_level(logging.WARNING, logger="lanthorn"):
        lanthorn.Server(config, load_entry_points=False).close()
    assert 'unknown configuration key "StorageDirectroy"' in caplog.text
    assert 'did you mean "StorageDirectory"?' in caplog.text
