// A plugin that vendors its own copy of ctxlocal. Built three times (see CMakeLists.txt): from the
// headers of ctxlocal 0.1.0 (before the ABI namespace), from the current headers, and from the current
// headers with another CTXLOCAL_ABI_NAMESPACE (what a later version with a changed layout has). The copies
// are loaded into one process. PLUGIN names its C functions.
#include <ctxlocal/ctxlocal.hpp>

#include <atomic>
#include <string>

#define PLUGIN_CAT2(a, b) a##_##b
#define PLUGIN_CAT(a, b) PLUGIN_CAT2(a, b)
#define PLUGIN_FN(name) PLUGIN_CAT(PLUGIN, name)
#define PLUGIN_API extern "C" __attribute__((visibility("default")))

namespace {

std::atomic<int> destroyed{0};

struct Tracked {
    int value = 0;
    Tracked() = default;
    Tracked(const Tracked&) = delete;
    Tracked& operator=(const Tracked&) = delete;
    ~Tracked() { ++destroyed; }
};
ctxlocal::Local<Tracked> value;

struct App : ctxlocal::AppHooks {
    std::string name = "plugin";
};
struct Request {
    std::string path;
};
using web = ctxlocal::Contexts<App, Request>;
App app;

}  // namespace

PLUGIN_API void PLUGIN_FN(store)(int v) { value.value().value = v; }
PLUGIN_API int PLUGIN_FN(load)() { return value.get() == nullptr ? -1 : value.get()->value; }
PLUGIN_API int PLUGIN_FN(count)() { return static_cast<int>(value.count()); }
PLUGIN_API int PLUGIN_FN(destroyed)() { return destroyed.load(); }

/// Serves `path` with web::handle: returns "<path> <g user>" as the handler read them, or "error: ...".
PLUGIN_API void PLUGIN_FN(serve)(const char* path, int user, char* out, int size) {
    std::string answer;
    try {
        answer = web::handle(app, Request{path}, [user] {
            web::g->set("user", user);
            return web::request->path + " " + std::to_string(web::g->get<int>("user"));
        });
        if (web::has_request_context()) answer = "error: a request is still bound";
    } catch (const std::exception& e) {
        answer = std::string("error: ") + e.what();
    }
    answer.copy(out, static_cast<std::size_t>(size - 1));
    out[answer.size() < static_cast<std::size_t>(size) ? answer.size() : size - 1] = '\0';
}
