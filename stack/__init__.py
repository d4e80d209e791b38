"""Typed, validated stack configuration: read `pulumi.Config` once into frozen dataclasses."""

from stack.config import ConfigError, HostSpec, StackConfig, load, parse

__all__ = ["ConfigError", "HostSpec", "StackConfig", "load", "parse"]
