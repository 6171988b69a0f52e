#!/usr/bin/env sh
# Installs the headless browser the dashboard tests render the page with: Debian's
# chromium-headless-shell. Idempotent: it does nothing when the browser is already there.
# It installs only as root with apt-get (CI images, fresh containers); anywhere else it
# says how to install it and exits 0, so `make test` still runs and the dashboard test
# itself fails with the same advice rather than this script hiding the other tests.
set -eu

PACKAGE=chromium-headless-shell
# A minimal image may have no fonts at all, and the screenshot would show empty boxes.
FONTS=fonts-dejavu-core

found() {
    # ANYAM_BROWSER names another binary (e.g. a full chromium); the tests read it too.
    if [ -n "${ANYAM_BROWSER:-}" ] && [ -x "${ANYAM_BROWSER}" ]; then
        return 0
    fi
    command -v chromium-headless-shell >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromium-headless-shell ]
}

if found; then
    exit 0
fi

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: installing ${PACKAGE} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be absent (slim images) or stale: refresh only when the
    # package is unknown, so a machine with fresh lists does not go to the network twice.
    if ! apt-cache show "${PACKAGE}" >/dev/null 2>&1; then
        apt-get update -q
    fi
    if ! apt-get install -y -q --no-install-recommends "${PACKAGE}" "${FONTS}"; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${PACKAGE}" "${FONTS}"
    fi
    found || { echo "install-browser: ${PACKAGE} installed but no binary found" >&2; exit 1; }
    exit 0
fi

cat >&2 <<MSG
install-browser: ${PACKAGE} is not installed, and this script installs it only as root with apt-get.
The dashboard tests need it. Install it with:
    sudo apt-get update && sudo apt-get install -y ${PACKAGE}
or point ANYAM_BROWSER at a Chromium binary that supports --headless --screenshot --dump-dom.
MSG
exit 0
