"""Keep secrets (API keys, tokens, passwords) out of what a run saves.

A config value can come from the environment (`+x.api_key='${oc.env:WANDB_API_KEY}'`) or be
typed on the command line; either way it would be written to `results.json`, to Hydra's
`.hydra/*.yaml` and to loggers that record the command line (W&B). `redact` replaces the
values under secret-looking keys, and any verbatim value of a secret environment variable,
with `REDACTED`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

REDACTED = "***redacted***"
SECRET_NAME = re.compile(r"(?i)(api[_-]?key|token|secret|passw(or)?d|credential)")
MIN_SECRET_LENGTH = 8  # shorter values ("0", "true") would redact innocent text
# `key=value` in an override or in Hydra's comma-joined `override_dirname`.
ASSIGNMENT = re.compile(r"""([\w.\-@/]+)=('[^']*'|"[^"]*"|\[[^\]]*\]|\{[^}]*\}|[^,\s]*)""")


def secret_values() -> list[str]:
    """The values of environment variables named like secrets, longest first."""
    values = {v for k, v in os.environ.items() if SECRET_NAME.search(k)}
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def _redact_text(text: str, values: list[str]) -> str:
    for value in values:
        text = text.replace(value, REDACTED)

    def assignment(match: re.Match[str]) -> str:
        return f"{match[1]}={REDACTED}" if SECRET_NAME.search(match[1]) else match[0]

    return ASSIGNMENT.sub(assignment, text)


def redact(obj: Any, values: list[str] | None = None) -> Any:
    """`obj` (plain dicts, lists, tuples, strings, scalars) with its secrets replaced."""
    values = secret_values() if values is None else values
    if isinstance(obj, dict):
        return {
            k: REDACTED if isinstance(k, str) and SECRET_NAME.search(k) else redact(v, values)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v, values) for v in obj)
    if isinstance(obj, str):
        return _redact_text(obj, values)
    return obj


def redact_hydra_files(folder: Path) -> None:
    """Rewrite, redacted, the YAML files Hydra saved in `folder` (`.hydra/*.yaml`, and a
    sweep's `multirun.yaml`) before the job starts; each is replaced atomically, and only
    when it holds a secret."""
    for path in [*sorted(Path(folder).glob(".hydra/*.yaml")), Path(folder) / "multirun.yaml"]:
        if not path.is_file():
            continue
        saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        clean = redact(saved)
        if clean == saved:
            continue
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(OmegaConf.to_yaml(clean))
        shutil.copymode(path, tmp)
        os.replace(tmp, path)


class RedactSecrets(logging.Filter):
    """A logging filter (Hydra's and the job's handlers) that redacts each message: Hydra's
    launcher logs every job's overrides, secrets included, to the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        return True
