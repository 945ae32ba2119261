"""Credentials by value and by name: recognised once here, redacted in every file and log we write.

Recognised: userinfo in URLs (`https://user:pass@host`), bearer tokens, provider-style keys
(`sk-...`, `hf_...`, `ghp_...`, `xox?-...`, `AKIA...`), and the value of an environment-variable-style
name (UPPER_SNAKE) that suggests a secret (SECRET_NAME: `*KEY*`, `*TOKEN*`, `*SECRET*`, `*AUTH*`, ...).
Config keys are lower_snake (`micro_batch_tokens`, `tokenizer`) and are judged by value only.
A regex cannot know every credential format; the config guard (config.operations) still refuses
secret-named environment variables so they are passed through the shell's environment instead.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|AUTH|CREDENTIAL|COOKIE", re.IGNORECASE)
_PATTERNS = (
    (re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s@:]*(:[^/\s@]*)?@", re.IGNORECASE), r"\g<scheme>" + REDACTED + "@"),
    (re.compile(r"\b(?P<kind>bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), r"\g<kind> " + REDACTED),
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"\b(hf|ghp|gho|ghs|ghu|glpat)_[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{8,}"), REDACTED),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),
)


def redact_text(text: str) -> str:
    """`text` with every credential-looking substring replaced by REDACTED."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable called `name` would hold a credential (`OPENAI_API_KEY`, `HF_TOKEN`)."""
    return bool(SECRET_NAME.search(name))


def redact_tree(value: Any, name: str = "") -> Any:
    """A copy of a JSON-like tree: strings redacted by value, and whole values under secret-looking names."""
    if isinstance(value, dict):
        return {k: redact_tree(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v, name) for v in value]
    if isinstance(value, str):
        return REDACTED if value and _ENV_NAME.fullmatch(name) and is_secret_name(name) else redact_text(value)
    return value
