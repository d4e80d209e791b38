"""The stack's configuration, understood in one place: `load()` reads Pulumi's config once
(stack/pulumi_config.py), `parse()` validates raw values (stack/parse.py) into the frozen
dataclasses of stack/model.py, one module per section with its rules."""

from stack.errors import ConfigError, key
from stack.model import HostSpec, StackConfig
from stack.parse import parse
from stack.pulumi_config import load, state_dir

__all__ = ["ConfigError", "HostSpec", "StackConfig", "key", "load", "parse", "state_dir"]
