# Sourced by scripts/cloudkon and scripts/test: makes .venv and installs the project into it.
# Safe to run again: it reinstalls only when pyproject.toml or this file changed (or the
# venv is missing). The editable install is a plain path entry (editable_mode=compat): an
# import finder would add ~20 ms to every start of `cloudkon`.
# Usage: bootstrap_venv "" | bootstrap_venv "[bench]" | bootstrap_venv "[dev]"

bootstrap_venv() {
    local extras="$1"
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    VENV="$root/.venv"
    local python="${CLOUDKON_PYTHON:-}"
    if [ -z "$python" ]; then
        for candidate in python3.11 python3.12 python3.13 python3; do
            if command -v "$candidate" >/dev/null 2>&1 &&
               "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
                python="$candidate"
                break
            fi
        done
    fi
    if [ -z "$python" ]; then
        echo "cloudkon: error: Python 3.11 or newer is needed (set CLOUDKON_PYTHON to its path)" >&2
        exit 2
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "cloudkon: setting up $VENV (first run only)..." >&2
        "$python" -m venv "$VENV" || exit 2
    fi
    local stamp="$VENV/.installed${extras}"
    local want
    want="$(cat "$root/pyproject.toml" "$root/scripts/_bootstrap.sh" | sha256sum | cut -d' ' -f1)"
    if [ "$extras" != "[dev]" ] && [ "$(cat "$VENV/.installed[dev]" 2>/dev/null)" = "$want" ]; then
        return 0  # the dev install includes the plain one and every other extra
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "cloudkon: installing cloudkon${extras} into $VENV..." >&2
        local log="$VENV/install.log"
        if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
               "$VENV/bin/python" -m pip install --disable-pip-version-check \
                   --config-settings editable_mode=compat -e "$root$extras"; } \
               >"$log" 2>&1; then
            tail -n 20 "$log" >&2
            echo "cloudkon: error: installing into $VENV failed; the whole log is $log" >&2
            exit 2
        fi
        # Byte-compile now: where PYTHONDONTWRITEBYTECODE is set, every start would
        # otherwise compile the project's modules again (~25 ms a start).
        "$VENV/bin/python" -m compileall -q "$root/cloudkon" "$root/local" "$root/worker" \
            "$root/submitter" "$root/fleet" "$root/benchmarks" >/dev/null 2>&1 || true
        echo "$want" > "$stamp"
    fi
}
