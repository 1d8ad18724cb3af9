// ctxlocal::Incident: what went wrong where no exception could be thrown, for the incident handler.
#pragma once

#include <exception>
#include <string>

#include "config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

/// Something that went wrong where no exception could be thrown, reported to the handler set with
/// `Contexts::set_incident_handler` (by default, printed to stderr). Each `Contexts<...>` instantiation
/// has its own handler.
struct Incident {
    enum class Kind {
        /// A context was found still pushed where it should not be, and was popped with its teardown:
        /// left pushed by the handler of `handle()` or of a `copy_current_request_context` callable,
        /// pushed after a context that was destroyed while still pushed, or left pushed in a Storage
        /// whose last handle was released.
        leaked_context,
        /// A teardown callback threw where its exception could not be thrown to the caller: while another
        /// exception was already propagating (from `run()`, `handle()` or a `scope()` guard being
        /// unwound; that exception wins), or while a context's destructor or a Storage's release popped
        /// contexts left pushed. The message says which.
        suppressed_teardown_error,
    };
    Kind kind;
    std::string message;
    std::exception_ptr error;  // the suppressed exception, for suppressed_teardown_error
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
