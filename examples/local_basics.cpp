// local_basics: werkzeug's Local demo in C++, then a tour of LocalStack, LocalProxy, LocalManager and
// Local<Namespace>. Prints what each thread sees; exits 0 only if every value is what it should be.
#include <ctxlocal/ctxlocal.hpp>

#include <cstddef>
#include <iostream>
#include <string>
#include <thread>

namespace {

// One value per thread. A namespace-scope Local is constant-initialised: no init-order problem.
ctxlocal::Local<int> b;

int failures = 0;

// Prints `what = value` and counts a failure when the value is not the expected one.
template <class T>
void show(const std::string& what, const T& value, const T& expected) {
    std::cout << what << " = " << value;
    if (!(value == expected)) {
        std::cout << "   <-- WRONG, expected " << expected;
        ++failures;
    }
    std::cout << '\n';
}

struct Request {
    std::string path;
};

}  // namespace

int main() {
    std::cout << std::boolalpha;

    // 1. The classic demo: each thread has its own b.
    b.value() = 1;
    show("main thread: b", *b, 1);
    std::thread([] {
        show("new thread: b before set (fresh, value-initialised)", *b, 0);
        b.value() = 2;
        show("new thread: b", *b, 2);
    }).join();  // the thread's b is destroyed when it exits
    show("main thread after join: b", *b, 1);

    // 2. A LocalStack and a proxy that follows its top.
    ctxlocal::LocalStack<Request> requests;
    const ctxlocal::LocalProxy<Request> request{requests, "Working outside of request context."};
    show("proxy bound before push", static_cast<bool>(request), false);
    try {
        (void)request->path;
        std::cout << "unbound proxy did not throw   <-- WRONG\n";
        ++failures;
    } catch (const ctxlocal::unbound_error& e) {
        show("unbound proxy throws", std::string(e.what()),
             std::string("Working outside of request context."));
    }
    requests.push(Request{"/outer"});
    requests.push(Request{"/inner"});
    show("request->path", request->path, std::string("/inner"));
    requests.pop();
    show("request->path after pop", request->path, std::string("/outer"));

    // 3. A LocalManager releases (destroys) per-request state for the calling thread.
    ctxlocal::Local<ctxlocal::Namespace> g;  // werkzeug's Local: attributes by name
    ctxlocal::LocalManager manager{requests, g};
    g.value().set("user", std::string("ana"));
    show("g.user", g.value().get<std::string>("user"), std::string("ana"));
    std::thread([&g] {
        show("new thread: g has user", g.value().contains("user"), false);  // its own, empty namespace
        g.value().set("user", std::string("bob"));
        show("new thread: g.user", g.value().get<std::string>("user"), std::string("bob"));
    }).join();
    show("main thread: g.user", g.value().get_or<std::string>("user", "nobody"), std::string("ana"));

    manager.cleanup();
    show("after cleanup: stack size", requests.size(), std::size_t{0});
    show("after cleanup: proxy bound", static_cast<bool>(request), false);
    show("after cleanup: g has a value", g.has_value(), false);

    // wrap(): werkzeug's make_middleware. Every call starts clean and cleans up after itself.
    auto handle = manager.wrap([&](const std::string& path) {
        const bool clean = requests.empty() && !g.has_value();
        requests.push(Request{path});
        g.value().set("seen", path);
        return clean;
    });
    show("request 1 started clean", handle("/a"), true);
    show("request 2 started clean", handle("/b"), true);

    if (failures != 0) {
        std::cout << failures << " unexpected value(s)\n";
        return 1;
    }
    std::cout << "all values as expected\n";
    return 0;
}
