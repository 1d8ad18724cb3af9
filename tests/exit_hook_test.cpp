// Tests of registering a thread for thread-exit cleanup (include/ctxlocal/detail/platform.hpp): when the
// system cannot register the thread (pthread_setspecific fails: out of memory), storing a value fails with
// a clear error and stores nothing, instead of storing a value that thread exit would never destroy.
// This executable interposes pthread_setspecific, to make it fail on request.
#include <dlfcn.h>
#include <doctest/doctest.h>
#include <pthread.h>
#include <ctxlocal/local.hpp>

#include "support/sync.hpp"

#include <atomic>
#include <cerrno>
#include <string>
#include <thread>

namespace {
std::atomic<bool> refuse_setspecific{false};
}  // namespace

extern "C" int pthread_setspecific(pthread_key_t key, const void* value) {
    using Real = int (*)(pthread_key_t, const void*);
    static const Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "pthread_setspecific"));
    if (refuse_setspecific.load()) return ENOMEM;
    return real(key, value);
}

TEST_CASE("Local.ExitHook.registration_failure_stores_nothing_and_says_why" * doctest::timeout(30)) {
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
