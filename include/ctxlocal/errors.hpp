// The exceptions ctxlocal throws. Every one derives from ctxlocal::error, which derives from
// std::runtime_error; every message says what was wrong and how to fix it. Exported (CTXLOCAL_EXPORT), so
// that one thrown in a shared library built with -fvisibility=hidden is caught by its type elsewhere:
// libc++ matches exception types by the address of their type_info (tests/dso).
#pragma once

#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

/// Base of every exception thrown by ctxlocal.
class CTXLOCAL_EXPORT error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Thrown when something is read that is not bound for the calling thread: `Local::value()` with no
/// value and no way to make one, `LocalProxy::current()` on an unbound proxy, `request` outside a
/// request context.
class CTXLOCAL_EXPORT unbound_error : public error {
public:
    using error::error;
};

/// Thrown on misuse of contexts and Storages: popping a context that is not the active one, that was
/// never pushed, or when none is active; copying a request context when none is active; a null
/// `std::shared_ptr` request; entering a null Storage, one entered on another thread, or more than 64
/// nested Scopes; starting an empty task; binding an executor to a null Storage.
class CTXLOCAL_EXPORT context_error : public error {
public:
    using error::error;
};

/// Thrown by `Namespace` when an attribute is missing or holds a value of another type.
class CTXLOCAL_EXPORT attribute_error : public error {
public:
    attribute_error(std::string name, const std::string& message) : error(message), name_(std::move(name)) {}

    /// The name of the attribute that was asked for.
    const std::string& name() const noexcept { return name_; }

private:
    std::string name_;
};

/// Thrown after teardown when one or more teardown callbacks threw. The context was popped anyway and
/// every callback ran. `what()` lists every message; `errors()` holds every exception, first first.
class CTXLOCAL_EXPORT teardown_error : public error {
public:
    teardown_error(const std::string& message, std::vector<std::exception_ptr> errors)
        : error(message), errors_(std::move(errors)) {}

    /// Every exception the callbacks threw, in the order they were thrown.
    const std::vector<std::exception_ptr>& errors() const noexcept { return errors_; }

private:
    std::vector<std::exception_ptr> errors_;
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
