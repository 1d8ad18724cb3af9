#!/usr/bin/env bash
# wine-run.sh WINEPREFIX PROGRAM [ARGS...]: runs a Windows program under wine64 in the given prefix (made on
# first use), without wine's debug chatter, and exits with the program's exit code. The CMake toolchain
# cmake/toolchains/mingw-w64-x86_64.cmake makes ctest run every test through it.
set -euo pipefail
[ "$#" -ge 2 ] || {
    echo "usage: wine-run.sh WINEPREFIX PROGRAM [ARGS...]" >&2
    exit 2
}
export WINEPREFIX="$1"
shift
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}"
WINE="${CTXLOCAL_WINE:-/usr/lib/wine/wine64}"
[ -x "$WINE" ] || {
    echo "wine-run.sh: no wine64 at $WINE (Debian: apt-get install wine64)" >&2
    exit 2
}
exec "$WINE" "$@"
