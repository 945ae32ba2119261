"""One cheap request to a judge endpoint before scoring starts: `GET <base_url>/models`, short timeout.

A judge nobody listens on would otherwise fail every call after its retries, and the scores would be
silently rule-only. Standard library only (no openai client, no retries: this is a yes/no question).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request

PROBE_TIMEOUT_S = 10.0
UNAVAILABLE = (502, 503, 504)  # a proxy with nothing behind it; other replies come from a live server


def judge_problem(base_url: str, api_key_env: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the OpenAI-compatible server at `base_url` cannot judge (unreachable, refuses the key from
    `api_key_env`, or a gateway with nothing behind it), or None when it answers. Any other reply (a 404 or
    501 from a server that does not list models, say) counts as reachable: the judge calls say more."""
    if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
        return f"{base_url!r} is not an http(s) URL; accepted: e.g. http://host:8000/v1"
    url = base_url.rstrip("/") + "/models"
    key = os.environ.get(api_key_env) or "EMPTY"  # what rewards.judge.JudgeClient sends
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):  # noqa: S310 - the user's judge URL
            return None
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            held = "is unset" if key == "EMPTY" else "holds a key the server refused"
            return f"GET {url} answered HTTP {err.code} (${api_key_env} {held})"
        if err.code in UNAVAILABLE:
            return f"GET {url} answered HTTP {err.code} {err.reason}"
        return None
    except (urllib.error.URLError, OSError) as err:
        return f"GET {url} got no answer ({getattr(err, 'reason', err)}; timeout {timeout_s:g} s)"
    except ValueError as err:  # e.g. a bad port
        return f"{base_url!r} is not a usable URL ({err})"
