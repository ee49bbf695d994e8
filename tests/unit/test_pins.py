"""environment.yml and pyproject.toml must pin the same versions."""

import tomllib

import yaml

from tests.support import REPO


def test_environment_yml_matches_pyproject_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert set(pip) == pinned
    assert all("==" in requirement for requirement in pinned)
