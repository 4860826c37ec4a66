"""config.example.yaml documents every option, each with its real default."""

from pathlib import Path

import pytest
import yaml

from controller.config import ControllerConfig, load_config
from controller.errors import ConfigError, SpecError

EXAMPLE = Path(__file__).parents[2] / "config.example.yaml"


def _keys(data: dict[str, object], prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _keys(value, f"{prefix}{key}.")
    return out


def test_example_equals_defaults() -> None:
    assert load_config(EXAMPLE) == ControllerConfig()


def test_example_lists_every_option() -> None:
    documented = _keys(yaml.safe_load(EXAMPLE.read_text()))
    every = _keys(ControllerConfig().model_dump(by_alias=True, mode="json"))
    assert documented == every


def test_bad_config_names_the_option(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("build: {batchSize: 0, bogus: 1}\n")
    with pytest.raises(SpecError) as err:
        load_config(bad)
    paths = dict(err.value.problems)
    assert "build.batchSize" in paths and "build.bogus" in paths


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"milvus: {timeoutSeconds: \xff}\n", "not UTF-8 text"),
        (b"- a\n- b\n", "expected a YAML mapping of config sections"),
        (b"build: {batchSize: 10}\nbuild: {batchSize: 20}\n", "given twice"),
        (b"build: [1, 2\n", "malformed YAML"),
    ],
)
def test_unreadable_config_is_a_config_error(tmp_path: Path, raw: bytes, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value)
    assert str(err.value).startswith(f"invalid controller config {path}")


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")
