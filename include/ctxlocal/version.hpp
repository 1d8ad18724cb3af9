// ctxlocal — werkzeug/Flask-style thread-local state for C++ servers.
// The version is defined here once; CMake and meson read it from this file.
#pragma once

#define CTXLOCAL_VERSION_MAJOR 0
#define CTXLOCAL_VERSION_MINOR 2
#define CTXLOCAL_VERSION_PATCH 0

/// The version as one number: major * 10000 + minor * 100 + patch.
#define CTXLOCAL_VERSION \
    (CTXLOCAL_VERSION_MAJOR * 10000 + CTXLOCAL_VERSION_MINOR * 100 + CTXLOCAL_VERSION_PATCH)
