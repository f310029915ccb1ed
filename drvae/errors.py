"""Config errors drvae reports to the user as one clear line (exit status 2), not a trace."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work: the message names the key and what was expected."""
