"""The one error of the configuration, and how it names a key."""

from __future__ import annotations

import pulumi

from stack.constants import PROJECT


class ConfigError(pulumi.RunError):
    """A stack configuration value that cannot work; the message names the key. A RunError, so
    `pulumi preview` prints the message without a Python traceback."""


def key(name: str) -> str:
    return f"{PROJECT}:{name}"
