// ctxlocal — werkzeug/Flask-style thread-local state for C++ servers. The umbrella header: includes
// every public header and nothing else; task.hpp (and storage_promise.hpp) only when the compiler has
// C++20 coroutines, asio.hpp never (it needs asio).
#pragma once

#include "app_hooks.hpp"
#include "config.hpp"
#include "context.hpp"
#include "errors.hpp"
#include "incident.hpp"
#include "local.hpp"
#include "local_stack.hpp"
#include "manager.hpp"
#include "namespace.hpp"
#include "proxy.hpp"
#include "storage.hpp"
#if defined(__cpp_impl_coroutine) && defined(__has_include)
#if __has_include(<coroutine>)
#include "task.hpp"
#endif
#endif
#include "version.hpp"
