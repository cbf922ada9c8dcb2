#!/usr/bin/env bash
# The README's test command: installs what the suite needs, then runs all of it.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's chromium and chromium-driver, for tests/e2e/test_docs_browser.py: the browser
# comes from apt, never from a download. Debian's dovecot-imapd, for the IMAP tests
# (tests/fixtures/imap.py starts its own throw-away Dovecot). Debian's postgresql, for the
# PostgreSQL runs of the store/API/e2e tests (tests/fixtures/postgres.py starts a throw-away
# cluster as an unprivileged user; the package's own cluster is not used). Skipped when present;
# apt-get update runs only when something must be installed.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        as_root=(false)
    fi
    if command -v apt-get >/dev/null 2>&1 && [ "${as_root[*]:-}" != false ]; then
        export DEBIAN_FRONTEND=noninteractive
        "${as_root[@]}" apt-get update -qq
        "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "tests/run.sh: cannot install ${missing[*]} (needs apt-get and root);" \
            "the browser test is skipped and the IMAP and PostgreSQL tests fail without them" >&2
    fi
fi
# Dovecot started as root reads test mail as an unprivileged user (tests/fixtures/imap.py),
# and the test PostgreSQL cluster runs as that user (initdb refuses root).
if [ "$(id -u)" -eq 0 ] && ! id mailproxytest >/dev/null 2>&1 \
    && command -v useradd >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin mailproxytest
fi

VENV="${MAIL_PROXY_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'

"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
exec "$VENV/bin/python" -m pytest "$@"
