// Two copies of ctxlocal in one process (two plugins that each vendor it): ctxlocal 0.1.0, the current
// version, and the current version under another ABI namespace. Each copy keeps its own registry and
// context stacks; none corrupts another, on the same threads, through thread exit.
#include <doctest/doctest.h>

#include <string>
#include <thread>
#include <vector>

#define PLUGIN_DECLARE(p)           \
    extern "C" void p##_store(int); \
    extern "C" int p##_load();      \
    extern "C" int p##_count();     \
    extern "C" int p##_destroyed(); \
    extern "C" void p##_serve(const char*, int, char*, int);

PLUGIN_DECLARE(v0_1)
PLUGIN_DECLARE(current)
PLUGIN_DECLARE(other_tag)

namespace {

struct Plugin {
    const char* name;
    void (*store)(int);
    int (*load)();
    int (*count)();
    int (*destroyed)();
    void (*serve)(const char*, int, char*, int);
};

const Plugin plugins[] = {
    {"v0_1", v0_1_store, v0_1_load, v0_1_count, v0_1_destroyed, v0_1_serve},
    {"current", current_store, current_load, current_count, current_destroyed, current_serve},
    {"other_tag", other_tag_store, other_tag_load, other_tag_count, other_tag_destroyed, other_tag_serve},
};
constexpr int plugin_count = 3;

std::string serve(const Plugin& p, const std::string& path, int user) {
    char out[256];
    p.serve(path.c_str(), user, out, sizeof out);
    return out;
}

}  // namespace

TEST_CASE("Abi.TwoVersions.each_copy_keeps_its_own_values_on_the_same_threads" * doctest::timeout(60)) {
    int destroyed_before[plugin_count];
    for (int i = 0; i < plugin_count; ++i) destroyed_before[i] = plugins[i].destroyed();
    constexpr int threads = 4;
    std::vector<std::thread> pool;
    std::vector<std::string> failures(threads);
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([t, &failures] {
            for (int round = 0; round < 200; ++round) {
                for (int i = 0; i < plugin_count; ++i) plugins[i].store(1000 * t + 10 * round + i);
                for (int i = 0; i < plugin_count; ++i) {
                    if (plugins[i].load() != 1000 * t + 10 * round + i) {
                        failures[t] = std::string(plugins[i].name) + " lost its value";
                        return;
                    }
                    const std::string path = "/" + std::string(plugins[i].name) + "/" + std::to_string(t);
                    const std::string answer = serve(plugins[i], path, 100 * t + i);
                    if (answer != path + " " + std::to_string(100 * t + i)) {
                        failures[t] = std::string(plugins[i].name) + " served: " + answer;
                        return;
                    }
                }
            }
        });
    }
    for (std::thread& t : pool) t.join();
    for (int t = 0; t < threads; ++t) CHECK_MESSAGE(failures[t].empty(), failures[t]);
    for (int i = 0; i < plugin_count; ++i) {
        INFO(plugins[i].name);
        CHECK(plugins[i].count() == 0);                                  // every thread's value went
        CHECK(plugins[i].destroyed() - destroyed_before[i] == threads);  // with its thread, once
    }
}

TEST_CASE("Abi.TwoVersions.values_are_not_shared_between_copies") {
    for (int i = 0; i < plugin_count; ++i) plugins[i].store(i + 1);
    for (int i = 0; i < plugin_count; ++i) {
        INFO(plugins[i].name);
        CHECK(plugins[i].load() == i + 1);
        CHECK(plugins[i].count() == 1);
    }
}
