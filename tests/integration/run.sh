#!/usr/bin/env bash
# Packaging integration tests: builds and runs tests/integration/consumer.cpp against ctxlocal consumed in
# every supported way, with each compiler given (default: g++ clang++). Work happens in build/integration/
# (wiped on every run). Run by `bash scripts/test.sh integration`; can also be run alone.
#
#   find_package     CMake install (cmake --install --prefix) + find_package(ctxlocal CONFIG REQUIRED)
#   add_subdirectory add_subdirectory(<checkout>)
#   fetchcontent     FetchContent with FETCHCONTENT_SOURCE_DIR_CTXLOCAL=<checkout> (the working tree)
#   fetchcontent_git FetchContent cloning file://<checkout> at HEAD; only when HEAD exists and the tree is
#                    clean, since a clone sees committed state only (always the case in CI's fresh clone)
#   meson_subproject meson subproject (subprojects/ctxlocal -> checkout), --force-fallback-for=ctxlocal
#   meson_wrap       meson subproject fetched through a wrap file (subprojects/ctxlocal.wrap, [wrap-git] at
#                    file://<checkout> HEAD); like fetchcontent_git, only on a clean tree with a commit
#   pkg_config       pkg-config --cflags --libs ctxlocal against the CMake install prefix
#   pkg_config_meson pkg-config against a `meson install` prefix
#   plain            $CXX -std=c++17 -I include -pthread
#   plain_cxx20      the same with -std=c++20
#
# Prints PASS/FAIL per check and `integration: N passed, M failed`; exits non-zero if any failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/integration"
WORK="$ROOT/build/integration"
COMPILERS=("$@")
if [ "${#COMPILERS[@]}" -eq 0 ]; then
    COMPILERS=(g++ clang++)
fi

version="$(sed -n 's/^#define CTXLOCAL_VERSION_\(MAJOR\|MINOR\|PATCH\) \+\([0-9]\+\).*/\2/p' \
    "$ROOT/include/ctxlocal/version.hpp" | paste -sd.)"
WARN=(-Wall -Wextra -Wpedantic -Werror)

rm -rf "$WORK"
mkdir -p "$WORK/logs"

# --- shared installs (done once, with the default compiler) ------------------------------------------------
install_cmake() {
    cmake -S "$ROOT" -B "$WORK/cmake-install-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCTXLOCAL_INSTALL=ON -DCTXLOCAL_BUILD_TESTS=OFF -DCTXLOCAL_BUILD_EXAMPLES=OFF
    cmake --build "$WORK/cmake-install-build"
    cmake --install "$WORK/cmake-install-build" --prefix "$WORK/prefix"
    local f
    for f in include/ctxlocal/ctxlocal.hpp include/ctxlocal/version.hpp \
        share/cmake/ctxlocal/ctxlocalConfig.cmake share/cmake/ctxlocal/ctxlocalConfigVersion.cmake \
        share/cmake/ctxlocal/ctxlocalTargets.cmake share/pkgconfig/ctxlocal.pc; do
        [ -f "$WORK/prefix/$f" ] || { echo "missing from the CMake install: $f"; return 1; }
    done
}

install_meson() {
    meson setup "$WORK/meson-install-build" "$ROOT" --prefix "$WORK/meson-prefix" \
        -Dtests=false -Dexamples=false
    meson install -C "$WORK/meson-install-build"
    [ -f "$WORK/meson-prefix/include/ctxlocal/ctxlocal.hpp" ] || { echo "meson install: no headers"; return 1; }
    [ -f "$WORK/meson-prefix/share/pkgconfig/ctxlocal.pc" ] || { echo "meson install: no ctxlocal.pc"; return 1; }
}

# --- the checks: check_<mode> CXX DIR ------------------------------------------------------------------
cmake_consumer() { # cmake_consumer SOURCE_SUBDIR CXX DIR [CMAKE_ARGS...]
    local src="$1" cxx="$2" dir="$3"
    shift 3
    cmake -S "$HERE/$src" -B "$dir" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Release "$@"
    cmake --build "$dir"
    "$dir/consumer"
}

check_find_package() {
    cmake_consumer find_package "$1" "$2" -DCMAKE_PREFIX_PATH="$WORK/prefix" \
        -DCTXLOCAL_EXPECTED_VERSION="$version"
}

check_add_subdirectory() { cmake_consumer add_subdirectory "$1" "$2" -DCTXLOCAL_SOURCE_DIR="$ROOT"; }

check_fetchcontent() {
    cmake_consumer fetchcontent "$1" "$2" -DCTXLOCAL_GIT_REPOSITORY="file://$ROOT" \
        -DFETCHCONTENT_SOURCE_DIR_CTXLOCAL="$ROOT"
}

check_fetchcontent_git() {
    local head
    head="$(git -C "$ROOT" rev-parse HEAD)"
    cmake_consumer fetchcontent "$1" "$2" -DCTXLOCAL_GIT_REPOSITORY="file://$ROOT" -DCTXLOCAL_GIT_TAG="$head"
}

check_meson_subproject() {
    local cxx="$1" dir="$2"
    mkdir -p "$dir/src/subprojects"
    cp "$HERE/meson_subproject/meson.build" "$HERE/consumer.cpp" "$dir/src/"
    ln -sfn "$ROOT" "$dir/src/subprojects/ctxlocal"
    CXX="$cxx" meson setup "$dir/build" "$dir/src" --force-fallback-for=ctxlocal
    meson compile -C "$dir/build"
    meson test -C "$dir/build" --print-errorlogs
    local targets
    targets="$(meson introspect --targets "$dir/build")"
    if grep -q '"name": "odr_test"' <<<"$targets"; then
        echo "ctxlocal built its tests as a subproject"
        return 1
    fi
}

check_meson_wrap() {
    local cxx="$1" dir="$2" head
    head="$(git -C "$ROOT" rev-parse HEAD)"
    mkdir -p "$dir/src/subprojects"
    cp "$HERE/meson_subproject/meson.build" "$HERE/consumer.cpp" "$dir/src/"
    sed -e "s|@URL@|file://$ROOT|" -e "s|@REVISION@|$head|" "$HERE/meson_subproject/ctxlocal.wrap.in" \
        >"$dir/src/subprojects/ctxlocal.wrap"
    cat "$dir/src/subprojects/ctxlocal.wrap"
    CXX="$cxx" meson setup "$dir/build" "$dir/src" --force-fallback-for=ctxlocal
    meson compile -C "$dir/build"
    meson test -C "$dir/build" --print-errorlogs
}

pkg_config_consumer() { # pkg_config_consumer PREFIX CXX DIR
    local prefix="$1" cxx="$2" dir="$3" flags got
    export PKG_CONFIG_PATH="$prefix/share/pkgconfig"
    got="$(pkg-config --modversion ctxlocal)"
    [ "$got" = "$version" ] || { echo "pkg-config says version $got, expected $version"; return 1; }
    flags="$(pkg-config --cflags --libs ctxlocal)"
    echo "pkg-config --cflags --libs ctxlocal: $flags"
    mkdir -p "$dir"
    # shellcheck disable=SC2086 # flags must split
    "$cxx" -std=c++17 "${WARN[@]}" "$HERE/consumer.cpp" $flags -o "$dir/consumer"
    "$dir/consumer"
}

check_pkg_config() { pkg_config_consumer "$WORK/prefix" "$1" "$2"; }
check_pkg_config_meson() { pkg_config_consumer "$WORK/meson-prefix" "$1" "$2"; }

check_plain() {
    mkdir -p "$2"
    "$1" -std="${3:-c++17}" "${WARN[@]}" -I "$ROOT/include" -pthread "$HERE/consumer.cpp" -o "$2/consumer"
    "$2/consumer"
}
check_plain_cxx20() { check_plain "$1" "$2" c++20; }

# --- runner -----------------------------------------------------------------------------------------------
passed=0
failed=0
run() { # run NAME COMMAND...: runs COMMAND with its output in logs/NAME.log; prints the log on failure
    local name="$1" log="$WORK/logs/$1.log"
    shift
    local rc
    # Not `if (...)`: errexit would be ignored inside a subshell that is a condition.
    set +e
    (
        set -e
        "$@"
    ) >"$log" 2>&1
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "PASS  $name"
    else
        failed=$((failed + 1))
        echo "FAIL  $name   (log: ${log#"$ROOT"/})"
        sed 's/^/    | /' "$log" | tail -n 60
    fi
}

modes=(find_package add_subdirectory fetchcontent)
if git -C "$ROOT" rev-parse -q --verify HEAD >/dev/null && [ -z "$(git -C "$ROOT" status --porcelain)" ]; then
    modes+=(fetchcontent_git meson_wrap)
else
    echo "note: skipping fetchcontent_git and meson_wrap (no commit yet or uncommitted changes; a clone would test stale code)"
fi
modes+=(meson_subproject pkg_config pkg_config_meson plain plain_cxx20)

run install_cmake install_cmake
run install_meson install_meson
for cxx in "${COMPILERS[@]}"; do
    for mode in "${modes[@]}"; do
        run "$mode-$cxx" "check_$mode" "$cxx" "$WORK/$mode-$cxx"
    done
done

echo "integration: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
