// ctxlocal — werkzeug/Flask-style thread-local state for C++ servers. The umbrella header: includes
// every public header and nothing else.
#pragma once

#include "app_hooks.hpp"
#include "config.hpp"
#include "context.hpp"
#include "errors.hpp"
#include "local.hpp"
#include "local_stack.hpp"
#include "manager.hpp"
#include "namespace.hpp"
#include "proxy.hpp"
#include "storage.hpp"
#include "version.hpp"
