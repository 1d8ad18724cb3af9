#!/usr/bin/env bash
# The test command: installs what is missing (Debian 12), then builds and tests ctxlocal in every
# configuration that matters, each in its own build/<leg> directory (re-runs reuse them).
#
#   bash scripts/test.sh               # every leg
#   bash scripts/test.sh gcc tsan      # only these legs
#
# Legs:
#   format       clang-format --dry-run -Werror over include/ tests/ examples/ benchmarks/
#   gcc          g++,     CMake + ninja, -O2 with asserts, ctest           (build/gcc)
#   clang        clang++ -std=c++20, CMake + ninja, -O2 with asserts, ctest (build/clang)
#   tsan         clang++, ThreadSanitizer, ctest                           (build/tsan)
#   asan         clang++, AddressSanitizer + UndefinedBehaviorSanitizer    (build/asan)
#   meson        g++, meson + ninja, meson test                            (build/meson)
#   integration  packaging: find_package, add_subdirectory, FetchContent, meson subproject, pkg-config
#                (CMake- and meson-installed), plain -I; each with g++ and clang++ (build/integration)
#   valgrind     g++ -O1 -g, every unit test under valgrind memcheck: 0 errors, 0 definite leaks
#                (build/valgrind)
#   fuzz         libFuzzer + ASan/UBSan over the model interpreter, CTXLOCAL_FUZZ_SECONDS (default 60)
#                (build/fuzz)
#
# Environment: CTXLOCAL_JOBS (parallel jobs, default: cores), CXX is ignored (each leg picks its compiler).
# Exits non-zero if any leg fails; the last line is always `test.sh: N passed, M failed` (N, M count legs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib.sh
source "$ROOT/scripts/lib.sh"

# Debian packages the legs need. Extend this list when a leg needs more.
PACKAGES=(
    g++ clang libclang-rt-14-dev clang-format
    cmake ninja-build meson pkg-config git python3 valgrind
    doctest-dev libcpp-httplib-dev libasio-dev
)

ALL_LEGS=(format gcc clang tsan asan meson integration valgrind fuzz)
JOBS="$(jobs_count)"

export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

# cmake_leg DIR CXX BUILD_TYPE FLAGS [CMAKE_ARGS...]: configure, build and ctest one CMake build.
cmake_leg() {
    local dir="build/$1" cxx="$2" build_type="$3" flags="$4"
    shift 4
    local upper
    upper="$(printf '%s' "$build_type" | tr '[:lower:]' '[:upper:]')"
    cmake -S "$ROOT" -B "$dir" -G Ninja \
        -DCMAKE_CXX_COMPILER="$cxx" \
        -DCMAKE_BUILD_TYPE="$build_type" \
        "-DCMAKE_CXX_FLAGS_${upper}=${flags}" \
        -DCTXLOCAL_BUILD_TESTS=ON -DCTXLOCAL_BUILD_EXAMPLES=ON -DCTXLOCAL_WERROR=ON \
        -DCTXLOCAL_REQUIRE_HTTPLIB=ON -DCTXLOCAL_REQUIRE_ASIO=ON "$@"
    cmake --build "$dir" --parallel "$JOBS"
    (cd "$dir" && ctest --output-on-failure --no-tests=error --parallel "$JOBS")
}

leg_format() {
    local dirs=() dir files=()
    for dir in include tests examples benchmarks; do
        [ -d "$dir" ] && dirs+=("$dir")
    done
    if [ "${#dirs[@]}" -gt 0 ]; then
        # Skip hidden and build directories (e.g. benchmarks/.build).
        mapfile -t files < <(find "${dirs[@]}" -mindepth 1 -type d \( -name '.*' -o -name 'build*' \) -prune \
            -o -type f \( -name '*.hpp' -o -name '*.cpp' \) -print | sort)
    fi
    if [ "${#files[@]}" -eq 0 ]; then
        log "no C++ files to check"
        return 0
    fi
    "${CLANG_FORMAT:-clang-format}" --version
    log "checking ${#files[@]} files (fix with: clang-format -i FILE)"
    "${CLANG_FORMAT:-clang-format}" --dry-run -Werror "${files[@]}"
}

leg_gcc() {
    cmake_leg gcc g++ Release "-O2"
    # CMake >= 3.24: also compile every header alone through VERIFY_INTERFACE_HEADER_SETS.
    local targets
    targets="$(cmake --build build/gcc --target help)"
    if grep -q '^all_verify_interface_header_sets:' <<<"$targets"; then
        cmake --build build/gcc --parallel "$JOBS" --target all_verify_interface_header_sets
    fi
}

# clang builds everything as C++20 (the other legs use the C++17 minimum).
leg_clang() { cmake_leg clang clang++ Release "-O2" -DCMAKE_CXX_STANDARD=20; }

leg_tsan() {
    # ThreadSanitizer in clang < 18 cannot handle the high mmap randomisation of recent kernels
    # ("unexpected memory mapping"); run the tests with ASLR off there.
    local bits
    bits="$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)"
    if [ "$bits" -gt 28 ] && setarch "$(uname -m)" -R true 2>/dev/null; then
        log "vm.mmap_rnd_bits=$bits: running the TSan tests under setarch -R"
        tsan_run() { setarch "$(uname -m)" -R "$@"; }
    else
        tsan_run() { "$@"; }
    fi
    cmake -S "$ROOT" -B build/tsan -G Ninja -DCMAKE_CXX_COMPILER=clang++ \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g" \
        -DCTXLOCAL_BUILD_TESTS=ON -DCTXLOCAL_BUILD_EXAMPLES=ON -DCTXLOCAL_WERROR=ON \
        -DCTXLOCAL_REQUIRE_HTTPLIB=ON -DCTXLOCAL_REQUIRE_ASIO=ON -DCTXLOCAL_SANITIZE=thread
    cmake --build build/tsan --parallel "$JOBS"
    (cd build/tsan && tsan_run ctest --output-on-failure --no-tests=error --parallel "$JOBS")
}

leg_asan() {
    cmake_leg asan clang++ RelWithDebInfo "-O1 -g" -DCTXLOCAL_SANITIZE=address,undefined
}

leg_meson() {
    local dir=build/meson
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir"
    else
        CXX=g++ meson setup "$dir" --buildtype=debugoptimized
    fi
    meson compile -C "$dir" -j "$JOBS"
    meson test -C "$dir" --print-errorlogs --num-processes "$JOBS"
}

leg_integration() { bash "$ROOT/tests/integration/run.sh" g++ clang++; }

leg_valgrind() {
    # ctest runs every test executable through CMAKE_CROSSCOMPILING_EMULATOR: here, valgrind. Only the
    # unit label (the e2e tests drive servers from Python and are covered by the sanitizer legs).
    # The model test runs a smaller budget under valgrind (about 50x slower than a plain run).
    # tests/valgrind.supp: known leaks that are not ctxlocal's (see the file).
    # --fair-sched=yes: valgrind runs one thread at a time, and by default a thread waking from a sleep
    # or a condition variable can wait minutes for its turn while busy threads keep it (the shutdown and
    # for_each race tests then starved and timed out); fair scheduling hands turns out in order.
    local memcheck="valgrind;--error-exitcode=99;--leak-check=full;--errors-for-leak-kinds=definite"
    memcheck+=";--show-leak-kinds=definite;--num-callers=30;--quiet;--fair-sched=yes"
    # Some tests replace operator new/delete (allocation counting, failure injection): let them, rather
    # than have valgrind intercept one half and report mismatched frees.
    memcheck+=";--soname-synonyms=somalloc=nouserintercepts;--suppressions=$ROOT/tests/valgrind.supp"
    cmake -S "$ROOT" -B build/valgrind -G Ninja -DCMAKE_CXX_COMPILER=g++ \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" \
        -DCTXLOCAL_BUILD_TESTS=ON -DCTXLOCAL_BUILD_EXAMPLES=OFF -DCTXLOCAL_WERROR=ON \
        "-DCMAKE_CROSSCOMPILING_EMULATOR=$memcheck" -DCTXLOCAL_TEST_TIMEOUT=600
    cmake --build build/valgrind --parallel "$JOBS"
    (cd build/valgrind && CTXLOCAL_MODEL_OPS="${CTXLOCAL_MODEL_OPS:-60000}" \
        ctest --output-on-failure --no-tests=error --parallel "$JOBS" -L unit)
}

leg_fuzz() { CTXLOCAL_FUZZ_DIR="$ROOT/build/fuzz" bash "$ROOT/tests/fuzz/run.sh"; }

# ---------------------------------------------------------------------------------------------------------
# Wrapped in main so bash reads the whole file before running it (editing it mid-run is safe).
main() {
    local legs=("$@") leg passed=0 failed=0 report=() start rc elapsed
    if [ "${#legs[@]}" -eq 0 ]; then
        legs=("${ALL_LEGS[@]}")
    fi
    for leg in "${legs[@]}"; do
        if ! declare -F "leg_$leg" >/dev/null; then
            printf 'usage: bash scripts/test.sh [%s]...\nunknown leg: %s\n' "${ALL_LEGS[*]}" "$leg" >&2
            exit 2
        fi
    done

    banner "installing missing packages"
    ensure_packages "${PACKAGES[@]}"

    for leg in "${legs[@]}"; do
        banner "leg $leg"
        start=$SECONDS
        set +e
        (
            set -e
            "leg_$leg"
        )
        rc=$?
        set -e
        elapsed=$((SECONDS - start))
        if [ "$rc" -eq 0 ]; then
            passed=$((passed + 1))
            report+=("$(printf '  %-12s PASS  %4ds' "$leg" "$elapsed")")
        else
            failed=$((failed + 1))
            report+=("$(printf '  %-12s FAIL  %4ds  (exit %d)' "$leg" "$elapsed" "$rc")")
        fi
        log "leg $leg: $([ "$rc" -eq 0 ] && echo passed || echo FAILED) in ${elapsed}s"
    done

    banner "summary"
    printf '%s\n' "${report[@]}"
    echo "test.sh: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

main "$@"
