// The "user header" of the shared-library test: what a program and its shared libraries include to share
// ctxlocal state. It shows the recommended pattern (names marked CTXLOCAL_EXPORT) next to the naive one
// (no marks), whose behaviour in a library built with -fvisibility=hidden the test pins down.
#pragma once

#include <ctxlocal/ctxlocal.hpp>

#include <atomic>
#include <string>

namespace dso {

/// How many Tracked values were destroyed, process-wide (default visibility: one counter for every DSO).
CTXLOCAL_EXPORT inline std::atomic<int> destroyed{0};

/// A value that counts its destructions. Deliberately not marked: the type of a value does not matter.
struct Tracked {
    int v = 0;
    Tracked() = default;
    explicit Tracked(int x) : v(x) {}
    Tracked(const Tracked&) = delete;
    Tracked& operator=(const Tracked&) = delete;
    ~Tracked() { destroyed.fetch_add(1); }
};

// Recommended: a global Local defined in a header is marked CTXLOCAL_EXPORT, so that the program and every
// library use this one object, whatever -fvisibility each is built with.
CTXLOCAL_EXPORT inline ctxlocal::Local<Tracked> shared_value;

// Also fine: declared (marked) in the header, defined in one library (library.cpp, default_lib).
CTXLOCAL_EXPORT extern ctxlocal::Local<int> defined_in_default_lib;

// Naive: not marked. A library built with -fvisibility=hidden gets its own copy of this object, i.e. a
// different Local: its own value per thread, its own count(). The registry is shared, so nothing breaks;
// the values are just not the program's.
inline ctxlocal::Local<Tracked> naive_value;

// Recommended: the App and Request types of Contexts are marked CTXLOCAL_EXPORT (and so must be a custom
// G). Contexts<App, Request> then has one set of context stacks (static members) in the whole process.
struct CTXLOCAL_EXPORT App : ctxlocal::AppHooks {
    std::string name;
};
struct CTXLOCAL_EXPORT Request {
    std::string path;
};
using web = ctxlocal::Contexts<App, Request>;

// Naive: unmarked types are hidden in a -fvisibility=hidden library, which makes Contexts<PlainApp,
// PlainRequest> (a template instantiated with hidden types) hidden there too: that library gets its own,
// private context stacks for it.
struct PlainApp : ctxlocal::AppHooks {
    std::string name;
};
struct PlainRequest {
    std::string path;
};
using plain_web = ctxlocal::Contexts<PlainApp, PlainRequest>;

}  // namespace dso
