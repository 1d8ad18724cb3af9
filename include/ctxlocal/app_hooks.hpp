// ctxlocal::AppHooks: teardown callbacks that belong to an application object.
#pragma once

#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "config.hpp"
#include "detail/marks.hpp"
#include "errors.hpp"
#include "incident.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

/// Derive your application type from AppHooks to register Flask-style teardown callbacks. Contexts of an
/// App that does not derive from it simply run none.
///
///     struct MyApp : ctxlocal::AppHooks { std::string name; };
///     MyApp app;
///     app.teardown_request([](std::exception_ptr error) { close_db(); });      // request still readable
///     app.teardown_appcontext([](std::exception_ptr error) { flush(web::g); }); // g still readable
///
/// Callbacks run in reverse registration order, on the thread that pops the context, each given the
/// exception that ended the request (null when it ended normally). Every callback runs even when an
/// earlier one throws; see Contexts for how their errors are reported.
/// Thread-safety: registering is not thread-safe and must not race with requests: register everything
/// before the application serves. Running callbacks from many threads at once is fine. A callback that
/// registers another callback on the App whose callbacks are running gets a ctxlocal::error (and nothing
/// is registered): the list it is being called from cannot change under it.
class AppHooks {
public:
    /// A teardown callback: receives the exception that ended the request or context, or null.
    using Callback = std::function<void(std::exception_ptr)>;

    /// Registers a callback run when a request context is popped for the last time (the request still
    /// bound). Returns *this. Allocates.
    AppHooks& teardown_request(Callback fn) {
        check_not_running("teardown_request");
        teardown_request_.push_back(std::move(fn));
        return *this;
    }

    /// Registers a callback run when an application context is popped for the last time (no request
    /// bound any more; `current_app` and `g` still readable). Returns *this. Allocates.
    AppHooks& teardown_appcontext(Callback fn) {
        check_not_running("teardown_appcontext");
        teardown_appcontext_.push_back(std::move(fn));
        return *this;
    }

    /// The registered callbacks, in registration order.
    const std::vector<Callback>& teardown_request_callbacks() const noexcept { return teardown_request_; }
    /// The registered callbacks, in registration order.
    const std::vector<Callback>& teardown_appcontext_callbacks() const noexcept {
        return teardown_appcontext_;
    }

protected:
    AppHooks() = default;
    ~AppHooks() = default;
    AppHooks(const AppHooks&) = default;
    AppHooks(AppHooks&&) = default;
    AppHooks& operator=(const AppHooks&) = default;
    AppHooks& operator=(AppHooks&&) = default;

private:
    void check_not_running(const char* what) const {
        if (detail::ScopedMark::contains(detail::MarkKind::running_hooks, this)) {
            throw error(std::string("ctxlocal: AppHooks::") + what +
                        "() called from a teardown callback of the same application; register every "
                        "callback before the application serves");
        }
    }

    std::vector<Callback> teardown_request_;
    std::vector<Callback> teardown_appcontext_;
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
