"""The stack files in the repository pass the same validation as `pulumi preview`."""

from pathlib import Path

import pytest
import yaml

from stack import parse

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(ROOT.glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_stack_file_is_valid(path):
    config = yaml.safe_load(path.read_text())["config"]
    raw = {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith("mds:")}
    parsed = parse(raw, ssh_private_key="set with pulumi config set --secret")
    assert parsed.hosts and sum(h.is_manager for h in parsed.hosts) % 2 == 1
