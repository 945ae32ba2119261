#!/usr/bin/env bash
# Build (or reuse) the CPU environment described by requirements/lock-cpu.txt, and give this checkout
# its own .venv on top of it.
#
# The heavy environment (torch, vLLM, megatron-core, ...) is keyed by the hash of the lock file, this
# script and the Python version, and kept outside the tree (NQL_ENV_CACHE, default
# ~/.cache/nemo_qwenlong/envs) so fresh clones reuse it. Each checkout's .venv is a thin venv whose
# site-packages adds the shared one (a .pth line) and holds this checkout's editable install, so two
# clones never see each other's code. NQL_ENV_CACHE=off builds one full private .venv instead.
# Without the cache everything is built from scratch. Idempotent: a second run checks and exits.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$ROOT/requirements/lock-cpu.txt"
PY="${NQL_PYTHON:-python3.11}"
PIP_VERSION="24.3.1"

[ -f "$LOCK" ] || { echo "setup: lock file $LOCK not found (run from a checkout of the repo)" >&2; exit 1; }
command -v "$PY" >/dev/null || { echo "setup: $PY not found (set NQL_PYTHON to a Python 3.11 interpreter)" >&2; exit 1; }
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$PYVER" = "3.11" ] || { echo "setup: need Python 3.11 (the local CPU torch wheel is cp311), $PY is $PYVER" >&2; exit 1; }

KEY="$(cat "$LOCK" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)-py$PYVER"
CACHE="${NQL_ENV_CACHE:-$HOME/.cache/nemo_qwenlong/envs}"
if [ "$CACHE" = "off" ]; then
    ENV="$ROOT/.venv"
else
    ENV="$CACHE/$KEY"
fi

pip_quiet() {
    # This machine's pip config names local index folders that pip warns about once per package;
    # drop exactly those lines, keep every other message, and keep pip's exit status.
    "$@" 2>&1 | { grep -v "^WARNING: Location 'file:///opt/" || true; }
    return "${PIPESTATUS[0]}"
}

build_env() {
    local env="$1"
    if [ "$(cat "$env/.nql-complete" 2>/dev/null)" = "$KEY" ]; then
        return 0
    fi
    echo "setup: building environment $env (lock key $KEY); ~3-5 min on a fresh machine"
    rm -rf "$env"
    local t0=$SECONDS
    "$PY" -m venv "$env"
    pip_quiet "$env/bin/python" -m pip install -q "pip==$PIP_VERSION"
    # --no-deps: the lock is complete and exact, so nothing is resolved here.
    # --ignore-requires-python: megatron-core 0.19.2 ships a cp311 wheel but declares Python>=3.12
    # (measured in shared/docs/megatron-on-cpu.md); its code runs on 3.11.
    pip_quiet "$env/bin/python" -m pip install -q --no-deps --ignore-requires-python -r "$LOCK" \
        || { echo "setup: pip install from $LOCK failed" >&2; exit 1; }
    echo "$KEY" > "$env/.nql-complete"
    echo "setup: environment built in $((SECONDS - t0)) s"
}

thin_venv() {
    # .venv = a venv without packages whose site-packages adds the shared environment's.
    local venv="$1" shared="$2"
    if [ "$(cat "$venv/.nql-shared" 2>/dev/null)" = "$shared" ] && [ -x "$venv/bin/python" ]; then
        return 0
    fi
    rm -rf "$venv"
    "$PY" -m venv --without-pip "$venv"
    local site shared_site
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    shared_site="$("$shared/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    echo "import site; site.addsitedir('$shared_site')" > "$site/_nemo_qwenlong_shared_env.pth"
    echo "$shared" > "$venv/.nql-shared"
    echo "setup: .venv for this checkout on top of $shared"
}

if [ "$ENV" = "$ROOT/.venv" ]; then
    [ -L "$ROOT/.venv" ] && rm -f "$ROOT/.venv"
    rm -f "$ROOT/.venv/.nql-shared"
    build_env "$ENV"
else
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.$KEY.lock"
    flock 9
    build_env "$ENV"
    flock -u 9
    thin_venv "$ROOT/.venv" "$ENV"
fi

# The package itself, editable, into this checkout's .venv.
installed_root="$(cd /tmp && "$ROOT/.venv/bin/python" -c 'import os, nemo_qwenlong as m; print(os.path.dirname(os.path.dirname(os.path.realpath(m.__file__))))' 2>/dev/null || true)"
if [ "$installed_root" != "$(realpath "$ROOT")" ] || [ ! -x "$ROOT/.venv/bin/nemo-qwenlong" ]; then
    pip_quiet "$ROOT/.venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
    echo "setup: nemo_qwenlong installed in editable mode from $ROOT"
fi
echo "setup: ready ($ROOT/.venv, lock key $KEY)"
