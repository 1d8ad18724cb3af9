#!/usr/bin/env bash
# The test command: installs what is missing (Debian 12), then builds and tests ctxlocal in every
# configuration that matters, each in its own build/<leg> directory (re-runs reuse them).
#
#   bash scripts/test.sh               # every leg
#   bash scripts/test.sh gcc tsan      # only these legs
#
# Legs:
#   format       clang-format --dry-run -Werror over include/ tests/ examples/ benchmarks/
#   tidy         clang-tidy (.clang-tidy, warnings as errors) over every public header, C++17 and C++20
#   docs         every relative link, cited test case and cited path in README.md, docs/, CHANGELOG.md exists
#                (scripts/check_docs.py)
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
#   windows      x86-64 Windows: mingw-w64 g++ (POSIX threads) cross build, the unit, misuse, exception-safety,
#                model and contexts tests (and more, see leg_windows) under wine64 (build/windows)
#   aarch64      aarch64 Linux: g++ cross build, tests under qemu-user; fork cases left out (build/aarch64)
#   i686         32-bit x86 Linux: g++ cross build, tests run natively through the i686 loader (build/i686)
#   libcxx       clang++ -std=c++20 with libc++ (what macOS users get): the core suites, fork, shared
#                libraries, coroutines (build/libcxx)
#   Platforms and what each leg proves: docs/platforms.md.
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
    g++ clang libclang-rt-14-dev clang-format clang-tidy
    cmake ninja-build meson pkg-config git python3 valgrind
    doctest-dev libcpp-httplib-dev libasio-dev libboost1.74-dev
    libgrpc++-dev libprotobuf-dev protobuf-compiler-grpc
)
# Per leg, installed by the leg itself (so that running one leg installs only what it needs).
WINDOWS_PACKAGES=(g++-mingw-w64-x86-64-posix wine64)
AARCH64_PACKAGES=(g++-aarch64-linux-gnu qemu-user)
I686_PACKAGES=(g++-i686-linux-gnu)
LIBCXX_PACKAGES=(clang libc++-14-dev libc++abi-14-dev)

ALL_LEGS=(format docs tidy gcc clang tsan asan meson integration valgrind fuzz windows aarch64 i686 libcxx)
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
        -DCTXLOCAL_REQUIRE_HTTPLIB=ON -DCTXLOCAL_REQUIRE_BEAST=ON -DCTXLOCAL_REQUIRE_ASIO=ON "$@"
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

# gRPC (examples/grpc/ and its e2e tests) is built and required in the gcc leg only: its compiles are slow.
leg_gcc() {
    cmake_leg gcc g++ Release "-O2" -DCTXLOCAL_WITH_GRPC=ON -DCTXLOCAL_REQUIRE_GRPC=ON
    # CMake >= 3.24: also compile every header alone through VERIFY_INTERFACE_HEADER_SETS.
    local targets
    targets="$(cmake --build build/gcc --target help)"
    if grep -q '^all_verify_interface_header_sets:' <<<"$targets"; then
        cmake --build build/gcc --parallel "$JOBS" --target all_verify_interface_header_sets
    fi
}

# clang builds everything as C++20 (the other legs use the C++17 minimum).
leg_clang() { cmake_leg clang clang++ Release "-O2" -DCMAKE_CXX_STANDARD=20 -DCTXLOCAL_WITH_GRPC=OFF; }

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
        -DCTXLOCAL_REQUIRE_HTTPLIB=ON -DCTXLOCAL_REQUIRE_BEAST=ON -DCTXLOCAL_REQUIRE_ASIO=ON -DCTXLOCAL_WITH_GRPC=OFF \
        -DCTXLOCAL_SANITIZE=thread
    cmake --build build/tsan --parallel "$JOBS"
    (cd build/tsan && tsan_run ctest --output-on-failure --no-tests=error --parallel "$JOBS")
}

leg_asan() {
    cmake_leg asan clang++ RelWithDebInfo "-O1 -g" -DCTXLOCAL_SANITIZE=address,undefined -DCTXLOCAL_WITH_GRPC=OFF
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

leg_tidy() {
    local tu="$ROOT/build/tidy/headers.cpp"
    mkdir -p "$ROOT/build/tidy"
    printf '#include <ctxlocal/ctxlocal.hpp>\n#include <ctxlocal/asio.hpp>\n' >"$tu"
    "${CLANG_TIDY:-clang-tidy}" --version
    log "clang-tidy, C++20: every header (task.hpp, storage_promise.hpp and asio.hpp included)"
    "${CLANG_TIDY:-clang-tidy}" --quiet "$tu" -- -std=c++20 -I"$ROOT/include"
    printf '#include <ctxlocal/ctxlocal.hpp>\n' >"$tu"
    log "clang-tidy, C++17: the umbrella header"
    "${CLANG_TIDY:-clang-tidy}" --quiet "$tu" -- -std=c++17 -I"$ROOT/include"
}

leg_docs() { python3 "$ROOT/scripts/check_docs.py"; }

# cross_leg DIR TOOLCHAIN [CMAKE_ARGS...] -- TARGET...: configures a cross build with
# cmake/toolchains/TOOLCHAIN.cmake (ctest runs each test through its CMAKE_CROSSCOMPILING_EMULATOR; TOOLCHAIN
# `native`: none), builds
# only the named test programs, and runs their ctest tests (TARGET and TARGET.*); fails when one has none.
cross_leg() {
    local dir="build/$1" args=() tests=() regex
    if [ "$2" != native ]; then args+=("-DCMAKE_TOOLCHAIN_FILE=$ROOT/cmake/toolchains/$2.cmake"); fi
    shift 2
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
        args+=("$1")
        shift
    done
    shift
    tests=("$@")
    cmake -S "$ROOT" -B "$dir" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O2" \
        -DCTXLOCAL_BUILD_TESTS=ON -DCTXLOCAL_BUILD_EXAMPLES=OFF -DCTXLOCAL_WERROR=ON \
        -DCTXLOCAL_TEST_TIMEOUT=300 "${args[@]}"
    cmake --build "$dir" --parallel "$JOBS" --target "${tests[@]}"
    if [ -n "${CROSS_MACHINE:-}" ]; then  # the programs are for the target, not the build machine
        local program
        program="$(find "$dir/tests" -maxdepth 1 -name 'local_test*' -type f -print -quit)"
        local header
        header="$("${CROSS_OBJDUMP:-objdump}" -f "$program")" || die "$1: objdump failed on $program"
        grep -q "format $CROSS_MACHINE" <<<"$header" || die "$1: $program is not $CROSS_MACHINE"
    fi
    local test listed
    for test in "${tests[@]}"; do
        listed="$(cd "$dir" && ctest -N -R "^$test(\\..+)?\$" | grep -c '^ *Test *#' || true)"
        [ "$listed" -gt 0 ] || die "$1: ctest has no test $test"
    done
    regex="^($(IFS='|' && echo "${tests[*]}"))(\\..+)?\$"
    local exclude=()
    if [ -n "${CROSS_EXCLUDE:-}" ]; then exclude=(-E "$CROSS_EXCLUDE"); fi
    (cd "$dir" && ctest --output-on-failure --no-tests=error --parallel "$JOBS" -R "$regex" "${exclude[@]}")
}

# The suites the cross legs run: the unit, misuse, exception-safety, model and contexts tests, and the other
# tests of the core (Local, LocalStack, Storage, Namespace, proxies, teardown).
CROSS_TESTS=(local_test local_stack_test storage_test namespace_test proxy_test manager_test errors_test
    teardown_test misuse_test exception_safety_test model_test context_test)

leg_windows() {
    ensure_packages "${WINDOWS_PACKAGES[@]}"
    [ -x /usr/lib/wine/wine64 ] || die "no /usr/lib/wine/wine64 (Debian: wine64)"
    # A fresh prefix in the build directory; wine's crash debugger off, so that a crash is a failure.
    local prefix="$ROOT/build/windows/wineprefix"
    mkdir -p build/windows
    if [ ! -f "$prefix/system.reg" ]; then
        WINEPREFIX="$prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" /usr/lib/wine/wine64 wineboot -i
        WINEPREFIX="$prefix" WINEDEBUG=-all /usr/lib/wine/wine64 reg add \
            'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' /v Auto /t REG_SZ /d 0 /f
        WINEPREFIX="$prefix" WINEDEBUG=-all /usr/lib/wine/wine64 reg delete \
            'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' /v Debugger /f || true
    fi
    # One wineserver, with wine's own services, for the whole leg. Left to itself the server exits after
    # every test program (its services with it), the next program boots them again (about 2 s), and one
    # that connects while the server is exiting fails at once ("wine client error: recvmsg: Connection
    # reset by peer": namespace_test failed so, in 0.01 s, in a fresh-clone run). wineboot starts the
    # services with their output on /dev/null: started by a test program, they would inherit its output
    # pipe and keep it open after the program ended.
    local server=/usr/lib/wine/wineserver64
    WINEPREFIX="$prefix" "$server" -w  # the prefix set-up's server, if it is still exiting
    WINEPREFIX="$prefix" "$server" -p </dev/null >/dev/null 2>&1
    # shellcheck disable=SC2064  # expanded now: $prefix is local to this function
    trap "WINEPREFIX='$prefix' '$server' -k >/dev/null 2>&1 || true" EXIT
    WINEPREFIX="$prefix" WINEDEBUG=-all /usr/lib/wine/wine64 wineboot </dev/null >/dev/null 2>&1
    # Not run on Windows (docs/platforms.md): shutdown_thread_local_test (C++ thread_local destructors run
    # after the teardown with mingw), and shutdown_threads_test (under wine 8 a process that ends while its
    # threads still run fails about 1 run in 40: killed by wine after every check passed, or a check
    # failing; threads started during exit() often do not run there, with or without ctxlocal).
    CROSS_MACHINE=pei-x86-64 \
        CTXLOCAL_MODEL_OPS="${CTXLOCAL_MODEL_OPS:-100000}" cross_leg windows mingw-w64-x86_64 -- \
        "${CROSS_TESTS[@]}" odr_test shutdown_static_test
    # Every header compiled alone with mingw-w64 (the platform layer's Windows side included).
    cmake --build build/windows --parallel "$JOBS" --target ctxlocal_header_check
}

leg_aarch64() {
    ensure_packages "${AARCH64_PACKAGES[@]}"
    command -v qemu-aarch64 >/dev/null || die "no qemu-aarch64 (Debian: qemu-user)"
    # qemu-user trips its own assertion when a multithreaded program forks: fork_test is not run and the
    # cases that fork are left out by name.
    local fork_cases="Misuse.Local.value_destructor_that_throws_terminates"
    fork_cases+=",Misuse.Proxy.getter_that_throws_terminates"
    CROSS_MACHINE=elf64-littleaarch64 CROSS_OBJDUMP=aarch64-linux-gnu-objdump \
        CTXLOCAL_MODEL_OPS="${CTXLOCAL_MODEL_OPS:-100000}" cross_leg aarch64 aarch64-linux-gnu \
        "-DCTXLOCAL_TEST_ARGS=--test-case-exclude=$fork_cases" -- \
        local_test misuse_test model_test context_test storage_test lock_free_test
}

leg_i686() {
    ensure_packages "${I686_PACKAGES[@]}"
    [ -x /usr/i686-linux-gnu/lib/ld-linux.so.2 ] || die "no /usr/i686-linux-gnu/lib/ld-linux.so.2"
    # The core suites less the API-only ones (proxy, manager, errors), plus fork, lock-free reads (64-bit
    # atomics on a 32-bit CPU) and the shutdown programs.
    CROSS_MACHINE=elf32-i386 cross_leg i686 i686-linux-gnu -- local_test local_stack_test storage_test \
        namespace_test teardown_test misuse_test exception_safety_test model_test context_test fork_test \
        lock_free_test shutdown_static_test shutdown_threads_test shutdown_thread_local_test
}

leg_libcxx() {
    ensure_packages "${LIBCXX_PACKAGES[@]}"
    # The core suites, fork, shared libraries and coroutines against libc++ (no examples: Debian's
    # cpp-httplib is built against libstdc++).
    local libcxx=(-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_CXX_STANDARD=20 -DCMAKE_CXX_FLAGS=-stdlib=libc++
        -DCMAKE_EXE_LINKER_FLAGS=-stdlib=libc++ -DCMAKE_SHARED_LINKER_FLAGS=-stdlib=libc++)
    cross_leg libcxx native "${libcxx[@]}" -- "${CROSS_TESTS[@]}" fork_test lock_free_test task_cxx20_test \
        dso_test
    # Proof that it is libc++: the test programs link libc++.so, not libstdc++.
    # (ldd's output is read whole first: `ldd | grep -q` under pipefail fails when grep exits early and ldd
    # dies of SIGPIPE, which is how this check once failed in CI.)
    local libs
    libs="$(ldd build/libcxx/tests/local_test)" || die "ldd failed on local_test"
    grep -q 'libc++\.so' <<<"$libs" || die "local_test is not linked with libc++:"$'\n'"$libs"
    if grep -q 'libstdc++' <<<"$libs"; then die "local_test links libstdc++:"$'\n'"$libs"; fi
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
