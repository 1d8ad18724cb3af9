# Shared helpers for scripts/test.sh and scripts/demo.sh. Source it; do not run it.

# log MESSAGE...: a visible line on stderr.
log() { printf '==> %s\n' "$*" >&2; }

# die MESSAGE...: print and exit 1.
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# banner TITLE: a header that separates the log of one step from the next.
banner() {
    printf '\n%s\n== %s\n%s\n' "$(printf '=%.0s' {1..100})" "$*" "$(printf '=%.0s' {1..100})"
}

# ensure_packages PACKAGE...: installs the Debian packages that are not installed yet, as root or through
# sudo, running `apt-get update` first only when something is missing. No-op when all are present. On a
# system without dpkg it installs nothing and only warns.
ensure_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        log "not a Debian-like system: install these yourself if a step fails: $*"
        return 0
    fi
    local missing=() package status
    for package in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)"
        if [ "$status" != "install ok installed" ]; then
            missing+=("$package")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${missing[*]}"
        sudo=(sudo)
    fi
    log "installing missing packages: ${missing[*]}"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
    "${sudo[@]}" "${apt[@]}" update
    "${sudo[@]}" "${apt[@]}" install --no-install-recommends "${missing[@]}"
}

# jobs_count: parallel jobs to use (CTXLOCAL_JOBS, else the number of cores, at least 1).
jobs_count() {
    if [ -n "${CTXLOCAL_JOBS:-}" ]; then
        echo "$CTXLOCAL_JOBS"
    else
        nproc 2>/dev/null || echo 2
    fi
}
