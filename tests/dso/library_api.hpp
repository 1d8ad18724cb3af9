// The interface of the test libraries. library.cpp is built twice: as libctxlocal_dso_hidden
// (-fvisibility=hidden -fvisibility-inlines-hidden) and as libctxlocal_dso_default (default visibility),
// with DSO_LIB naming the namespace of its functions (hidden_lib, default_lib). main.cpp includes this file
// once per library. No include guard on purpose.
#include <cstddef>
#include <string>

#include "shared.hpp"

namespace dso::DSO_LIB {

/// Addresses of the Locals as this library sees them.
CTXLOCAL_EXPORT const void* shared_value_address();
CTXLOCAL_EXPORT const void* naive_value_address();

/// shared_value through this library: the calling thread's value (-1: none), set it, count().
CTXLOCAL_EXPORT int shared_get();
CTXLOCAL_EXPORT void shared_set(int v);
CTXLOCAL_EXPORT std::size_t shared_count();

/// The same for naive_value.
CTXLOCAL_EXPORT int naive_get();
CTXLOCAL_EXPORT void naive_set(int v);
CTXLOCAL_EXPORT std::size_t naive_count();

/// defined_in_default_lib through this library (-1: none).
CTXLOCAL_EXPORT int defined_get();
CTXLOCAL_EXPORT void defined_set(int v);

/// web (shared types) through this library: request path, app name, g["user"] ("<none>" / -1 when
/// unbound), the request stack depth.
CTXLOCAL_EXPORT std::string request_path();
CTXLOCAL_EXPORT std::string app_name();
CTXLOCAL_EXPORT int g_user();
CTXLOCAL_EXPORT std::size_t request_depth();
/// Reads web::request->path without checking: throws ctxlocal::unbound_error outside a request.
CTXLOCAL_EXPORT std::string request_path_or_throw();
/// Serves `path` with web::handle in this library; the handler sets g["user"] = 7 and calls `inner`.
CTXLOCAL_EXPORT std::string handle(App& app, const std::string& path, std::string (*inner)());

/// plain_web (unmarked types) through this library.
CTXLOCAL_EXPORT std::string plain_request_path();
CTXLOCAL_EXPORT std::string plain_handle(PlainApp& app, const std::string& path, std::string (*inner)());

}  // namespace dso::DSO_LIB
