// One test library; built twice (see library_api.hpp and CMakeLists.txt).
#include "library_api.hpp"

namespace dso {

#if defined(DSO_DEFINES_EXTERN_LOCAL)
ctxlocal::Local<int> defined_in_default_lib;
#endif

namespace DSO_LIB {

const void* shared_value_address() { return &shared_value; }
const void* naive_value_address() { return &naive_value; }

int shared_get() {
    const Tracked* t = shared_value.get();
    return t == nullptr ? -1 : t->v;
}
void shared_set(int v) { shared_value.value().v = v; }
std::size_t shared_count() { return shared_value.count(); }

int naive_get() {
    const Tracked* t = naive_value.get();
    return t == nullptr ? -1 : t->v;
}
void naive_set(int v) { naive_value.value().v = v; }
std::size_t naive_count() { return naive_value.count(); }

int defined_get() {
    const int* p = defined_in_default_lib.get();
    return p == nullptr ? -1 : *p;
}
void defined_set(int v) { defined_in_default_lib.value() = v; }

std::string request_path() { return web::has_request_context() ? web::request->path : "<none>"; }
std::string app_name() { return web::has_app_context() ? web::current_app->name : "<none>"; }
int g_user() { return web::has_app_context() ? web::g->get_or<int>("user", -1) : -1; }
std::size_t request_depth() { return web::request_context_depth(); }
std::string request_path_or_throw() { return web::request->path; }

std::string handle(App& app, const std::string& path, std::string (*inner)()) {
    return web::handle(app, Request{path}, [&] {
        web::g->set("user", 7);
        return inner();
    });
}

std::string plain_request_path() {
    return plain_web::has_request_context() ? plain_web::request->path : "<none>";
}
std::string plain_handle(PlainApp& app, const std::string& path, std::string (*inner)()) {
    return plain_web::handle(app, PlainRequest{path}, [&] { return inner() + " " + plain_request_path(); });
}

}  // namespace DSO_LIB
}  // namespace dso
