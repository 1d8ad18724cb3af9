// Tests of registering a thread for thread-exit cleanup (include/ctxlocal/detail/platform.hpp): when the
// system cannot register the thread (pthread_setspecific fails: out of memory), storing a value fails with
// a clear error and stores nothing, instead of storing a value that thread exit would never destroy.
// This executable interposes pthread_setspecific, to make it fail on request.
#include <doctest/doctest.h>
#include <pthread.h>
#include <ctxlocal/local.hpp>

#include "support/sync.hpp"

#include <atomic>
#include <cerrno>
#include <string>
#include <thread>

// ThreadSanitizer's runtime calls pthread_setspecific while it sets a new thread up, before that thread
// may run instrumented code such as this interposer: under TSan the interposer is left out and the test
// skipped (it runs in the plain, clang, ASan and valgrind legs; nothing in it is about concurrency).
#if defined(__SANITIZE_THREAD__)
#define EXIT_HOOK_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EXIT_HOOK_TEST_TSAN 1
#endif
#endif

namespace {
std::atomic<bool> refuse_setspecific{false};
#if defined(EXIT_HOOK_TEST_TSAN)
constexpr bool interposed = false;
#else
constexpr bool interposed = true;
#endif
}  // namespace

#if !defined(EXIT_HOOK_TEST_TSAN)
#if defined(__GNUC__) && !defined(__clang__)
// glibc declares pthread_setspecific with access(none, 2); GCC then warns that this definition passes on
// its own parameter.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// glibc's own function, bound by symbol version (no dlsym: sanitizer runtimes call pthread_setspecific
// before this program could look anything up).
__asm__(".symver glibc_pthread_setspecific,__pthread_setspecific@GLIBC_2.2.5");
extern "C" int glibc_pthread_setspecific(pthread_key_t key, const void* value);

extern "C" __attribute__((noinline)) int pthread_setspecific(pthread_key_t key, const void* value) {
    if (refuse_setspecific.load()) return ENOMEM;
    return glibc_pthread_setspecific(key, value);
}
#endif

TEST_CASE("Local.ExitHook.registration_failure_stores_nothing_and_says_why" * doctest::timeout(30) *
          doctest::skip(!interposed)) {
    using test_support::Counted;
    const int live_before = Counted::live.load();
    ctxlocal::Local<Counted> local;
    std::thread([&] {
        refuse_setspecific = true;
        std::string message;
        try {
            local.value();
        } catch (const ctxlocal::error& e) {
            message = e.what();
        }
        refuse_setspecific = false;
        CHECK(message.find("cannot register this thread for thread-exit cleanup") != std::string::npos);
        CHECK(local.get() == nullptr);  // nothing was stored
        CHECK(local.count() == 0);
        CHECK(Counted::live.load() == live_before);
        local.value().value = 7;  // once the system can register the thread, it works
        CHECK(local.count() == 1);
    }).join();
    CHECK(local.count() == 0);  // and thread exit destroyed the value
    CHECK(Counted::live.load() == live_before);
}
