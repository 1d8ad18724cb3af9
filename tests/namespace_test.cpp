// Tests for ctxlocal::Namespace (include/ctxlocal/namespace.hpp): werkzeug/Flask `g`-style attributes,
// the errors for missing and mistyped attributes (which change nothing), value lifetimes, iteration order,
// and Local<Namespace> as werkzeug's Local.
#include <ctxlocal/namespace.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <ctxlocal/errors.hpp>
#include <ctxlocal/local.hpp>

#include "support/sync.hpp"

namespace ns_test {

using test_support::Counted;

/// Two types with names that appear nowhere else in the messages.
struct Apple {
    int seeds = 5;
};
struct Orange {
    int slices = 8;
};

std::vector<std::string> names_of(const ctxlocal::Namespace& ns) {
    std::vector<std::string> names;
    for (const std::string& name : ns) names.push_back(name);
    return names;
}

bool contains_text(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

}  // namespace ns_test

using ns_test::Apple;
using ns_test::Counted;
using ns_test::Orange;

// ---------------------------------------------------------------------------------------------------------
// set / get / get_if / get_or

TEST_CASE("Namespace.Set.then_get_returns_value") {
    ctxlocal::Namespace ns;
    CHECK(ns.empty());
    int& stored = ns.set("user_id", 42);
    CHECK(stored == 42);
    CHECK(ns.get<int>("user_id") == 42);
    CHECK(&ns.get<int>("user_id") == &stored);
    ns.set("name", std::string("ana"));
    CHECK(ns.get<std::string>("name") == "ana");
    CHECK(ns.size() == 2);
    CHECK_FALSE(ns.empty());
}

TEST_CASE("Namespace.Get.returns_mutable_reference") {
    ctxlocal::Namespace ns;
    ns.set("hits", 1);
    ns.get<int>("hits") += 10;
    CHECK(ns.get<int>("hits") == 11);
    const ctxlocal::Namespace& view = ns;
    CHECK(view.get<int>("hits") == 11);
    static_assert(std::is_same_v<decltype(view.get<int>("hits")), const int&>);
}

TEST_CASE("Namespace.Set.string_literal_is_stored_as_pointer") {
    ctxlocal::Namespace ns;
    ns.set("lang", "en");
    REQUIRE(ns.get_if<const char*>("lang") != nullptr);
    CHECK(std::string(ns.get<const char*>("lang")) == "en");
}

TEST_CASE("Namespace.Set.copies_the_name") {
    ctxlocal::Namespace ns;
    {
        std::string name = "temporary-name-longer-than-small-string-buffer";
        ns.set(name, 1);
        name.assign(name.size(), 'x');
    }
    CHECK(ns.contains("temporary-name-longer-than-small-string-buffer"));
}

TEST_CASE("Namespace.Names.are_case_sensitive") {
    ctxlocal::Namespace ns;
    ns.set("User", 1);
    CHECK(ns.contains("User"));
    CHECK_FALSE(ns.contains("user"));
    CHECK(ns.get_if<int>("user") == nullptr);
}

TEST_CASE("Namespace.Get.missing_throws_attribute_error_naming_it") {
    ctxlocal::Namespace ns;
    ns.set("present", 1);
    try {
        (void)ns.get<int>("missing_attr");
        FAIL("get of a missing attribute did not throw");
    } catch (const ctxlocal::attribute_error& e) {
        CHECK(e.name() == "missing_attr");
        CHECK(ns_test::contains_text(e.what(), "missing_attr"));
    }
    CHECK_THROWS_AS((void)ns.get<int>("missing_attr"), ctxlocal::error);
    const ctxlocal::Namespace& view = ns;
    CHECK_THROWS_AS((void)view.get<int>("missing_attr"), ctxlocal::attribute_error);
    CHECK(ns.size() == 1);
    CHECK_FALSE(ns.contains("missing_attr"));
}

TEST_CASE("Namespace.Get.wrong_type_throws_naming_both_types_and_changes_nothing") {
    ctxlocal::Namespace ns;
    ns.set("fruit", Apple{7});
    try {
        (void)ns.get<Orange>("fruit");
        FAIL("get with the wrong type did not throw");
    } catch (const ctxlocal::attribute_error& e) {
        CHECK(e.name() == "fruit");
        const std::string message = e.what();
        CHECK(ns_test::contains_text(message, "fruit"));
        CHECK(ns_test::contains_text(message, "Apple"));
        CHECK(ns_test::contains_text(message, "Orange"));
    }
    CHECK(ns.size() == 1);
    REQUIRE(ns.get_if<Apple>("fruit") != nullptr);
    CHECK(ns.get<Apple>("fruit").seeds == 7);
}

TEST_CASE("Namespace.Get.wrong_type_names_standard_types") {
    ctxlocal::Namespace ns;
    ns.set("n", 1.5);
    try {
        (void)ns.get<std::vector<int>>("n");
        FAIL("get with the wrong type did not throw");
    } catch (const ctxlocal::attribute_error& e) {
        const std::string message = e.what();
        CHECK(ns_test::contains_text(message, "double"));
        CHECK(ns_test::contains_text(message, "vector"));
    }
}

TEST_CASE("Namespace.GetIf.pointer_or_null") {
    ctxlocal::Namespace ns;
    CHECK(ns.get_if<int>("x") == nullptr);  // missing
    ns.set("x", 3);
    CHECK(ns.get_if<long>("x") == nullptr);  // wrong type
    int* p = ns.get_if<int>("x");
    REQUIRE(p != nullptr);
    CHECK(*p == 3);
    *p = 4;
    CHECK(ns.get<int>("x") == 4);
    const ctxlocal::Namespace& view = ns;
    CHECK(view.get_if<int>("x") == p);
    static_assert(noexcept(ns.get_if<int>("x")));
}

TEST_CASE("Namespace.GetOr.value_or_fallback") {
    ctxlocal::Namespace ns;
    CHECK(ns.get_or<std::string>("lang", "en") == "en");
    CHECK_FALSE(ns.contains("lang"));  // the fallback is not stored
    ns.set("lang", std::string("de"));
    CHECK(ns.get_or<std::string>("lang", "en") == "de");
    CHECK_THROWS_AS((void)ns.get_or<int>("lang", 0), ctxlocal::attribute_error);  // wrong type is a bug
    CHECK(ns.get<std::string>("lang") == "de");
}

// ---------------------------------------------------------------------------------------------------------
// set replacing, setdefault

TEST_CASE("Namespace.Set.replaces_value_of_another_type") {
    Counted::live = 0;
    ctxlocal::Namespace ns;
    ns.set("first", 0);
    ns.set("x", Counted(1));
    ns.set("last", 0);
    REQUIRE(Counted::live == 1);
    std::string& replaced = ns.set("x", std::string("now a string"));
    CHECK(Counted::live == 0);  // the old value was destroyed
    CHECK(replaced == "now a string");
    CHECK(ns.get<std::string>("x") == "now a string");
    CHECK_THROWS_AS((void)ns.get<Counted>("x"), ctxlocal::attribute_error);
    CHECK(ns.size() == 3);
    CHECK(ns_test::names_of(ns) == std::vector<std::string>{"first", "x", "last"});  // keeps its place
}

TEST_CASE("Namespace.Setdefault.inserts_when_missing") {
    ctxlocal::Namespace ns;
    int& v = ns.setdefault("count", 5);
    CHECK(v == 5);
    CHECK(ns.get<int>("count") == 5);
    CHECK(&ns.get<int>("count") == &v);
}

TEST_CASE("Namespace.Setdefault.keeps_existing_value") {
    ctxlocal::Namespace ns;
    ns.set("count", 1);
    int& v = ns.setdefault("count", 5);
    CHECK(v == 1);
    CHECK(&v == ns.get_if<int>("count"));
    CHECK(ns.size() == 1);
}

TEST_CASE("Namespace.Setdefault.existing_other_type_throws_and_changes_nothing") {
    ctxlocal::Namespace ns;
    ns.set("fruit", Apple{3});
    CHECK_THROWS_AS(ns.setdefault("fruit", Orange{}), ctxlocal::attribute_error);
    CHECK(ns.size() == 1);
    REQUIRE(ns.get_if<Apple>("fruit") != nullptr);
    CHECK(ns.get<Apple>("fruit").seeds == 3);
}

// ---------------------------------------------------------------------------------------------------------
// pop / contains / erase

TEST_CASE("Namespace.Pop.returns_and_removes") {
    ctxlocal::Namespace ns;
    ns.set("a", std::string("alpha"));
    ns.set("b", 2);
    CHECK(ns.pop<std::string>("a") == "alpha");
    CHECK_FALSE(ns.contains("a"));
    CHECK(ns.size() == 1);
    CHECK(ns.contains("b"));
}

TEST_CASE("Namespace.Pop.missing_throws_and_changes_nothing") {
    ctxlocal::Namespace ns;
    ns.set("b", 2);
    try {
        (void)ns.pop<int>("nope");
        FAIL("pop of a missing attribute did not throw");
    } catch (const ctxlocal::attribute_error& e) {
        CHECK(e.name() == "nope");
        CHECK(ns_test::contains_text(e.what(), "nope"));
    }
    CHECK(ns.size() == 1);
    CHECK(ns.get<int>("b") == 2);
}

TEST_CASE("Namespace.Pop.wrong_type_throws_and_changes_nothing") {
    ctxlocal::Namespace ns;
    ns.set("fruit", Apple{9});
    ns.set("other", 1);
    CHECK_THROWS_AS((void)ns.pop<Orange>("fruit"), ctxlocal::attribute_error);
    CHECK(ns.size() == 2);
    REQUIRE(ns.get_if<Apple>("fruit") != nullptr);
    CHECK(ns.get<Apple>("fruit").seeds == 9);
    CHECK(ns_test::names_of(ns) == std::vector<std::string>{"fruit", "other"});
}

TEST_CASE("Namespace.Pop.with_default") {
    ctxlocal::Namespace ns;
    CHECK(ns.pop<int>("missing", 7) == 7);
    CHECK(ns.empty());
    ns.set("x", 3);
    CHECK(ns.pop<int>("x", 7) == 3);
    CHECK_FALSE(ns.contains("x"));
    ns.set("fruit", Apple{});
    CHECK_THROWS_AS((void)ns.pop<int>("fruit", 0), ctxlocal::attribute_error);  // wrong type is not "missing"
    CHECK(ns.contains("fruit"));
}

TEST_CASE("Namespace.Contains.and_erase") {
    ctxlocal::Namespace ns;
    CHECK_FALSE(ns.contains("x"));
    ns.set("x", 1);
    CHECK(ns.contains("x"));
    CHECK(ns.erase("x"));
    CHECK_FALSE(ns.contains("x"));
    CHECK_FALSE(ns.erase("x"));
    CHECK(ns.empty());
}

// ---------------------------------------------------------------------------------------------------------
// size / clear / iteration

TEST_CASE("Namespace.Iteration.insertion_order") {
    ctxlocal::Namespace ns;
    CHECK(ns.begin() == ns.end());
    ns.set("zeta", 1);
    ns.set("alpha", 2);
    ns.set("mid", 3);
    CHECK(ns_test::names_of(ns) == std::vector<std::string>{"zeta", "alpha", "mid"});
    ns.erase("alpha");
    ns.set("new", 4);
    CHECK(ns_test::names_of(ns) == std::vector<std::string>{"zeta", "mid", "new"});
    auto it = ns.begin();
    CHECK(it->size() == 4);  // "zeta"
    auto old = it++;
    CHECK(*old == "zeta");
    CHECK(*it == "mid");
}

TEST_CASE("Namespace.Clear.removes_everything") {
    ctxlocal::Namespace ns;
    ns.set("a", 1);
    ns.set("b", 2);
    CHECK(ns.size() == 2);
    ns.clear();
    CHECK(ns.size() == 0);
    CHECK(ns.empty());
    CHECK(ns.begin() == ns.end());
    CHECK_FALSE(ns.contains("a"));
}

// ---------------------------------------------------------------------------------------------------------
// Value lifetimes

TEST_CASE("Namespace.Lifetime.values_destroyed_on_erase_clear_pop_and_destruction") {
    Counted::live = 0;
    SUBCASE("erase") {
        ctxlocal::Namespace ns;
        ns.set("a", Counted(1));
        ns.set("b", Counted(2));
        CHECK(Counted::live == 2);  // one live object per value: temporaries are gone
        ns.erase("a");
        CHECK(Counted::live == 1);
        CHECK(ns.get<Counted>("b").value == 2);
    }
    SUBCASE("clear") {
        ctxlocal::Namespace ns;
        ns.set("a", Counted(1));
        ns.set("b", Counted(2));
        ns.clear();
        CHECK(Counted::live == 0);
    }
    SUBCASE("pop") {
        ctxlocal::Namespace ns;
        ns.set("a", Counted(1));
        {
            Counted popped = ns.pop<Counted>("a");
            CHECK(popped.value == 1);
            CHECK(Counted::live == 1);  // only the result: the stored value is gone
        }
        CHECK(Counted::live == 0);
    }
    SUBCASE("destruction") {
        {
            ctxlocal::Namespace ns;
            ns.set("a", Counted(1));
            ns.set("b", Counted(2));
            CHECK(Counted::live == 2);
        }
        CHECK(Counted::live == 0);
    }
    CHECK(Counted::live == 0);
}

TEST_CASE("Namespace.Clear.destroys_values_in_insertion_order") {
    std::vector<int> log;
    // A token records its id when its last copy dies, however often the Namespace copies or moves it.
    auto token = [&log](int id) {
        return std::shared_ptr<void>(nullptr, [&log, id](void*) { log.push_back(id); });
    };
    ctxlocal::Namespace ns;
    for (int id = 1; id <= 4; ++id) ns.set("r" + std::to_string(id), token(id));
    REQUIRE(log.empty());
    ns.clear();
    CHECK(log == std::vector<int>{1, 2, 3, 4});
}

// ---------------------------------------------------------------------------------------------------------
// Local<Namespace>: werkzeug's Local

TEST_CASE("Namespace.Local.per_thread_attributes" * doctest::timeout(30)) {
    for (int threads : {1, 2, 8}) {
        CAPTURE(threads);
        ctxlocal::Local<ctxlocal::Namespace> local;
        local.value().set("id", -1);
        test_support::Barrier all_set(threads);
        std::atomic<int> mismatches{0};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, id = t + 1] {
                if (local.has_value()) ++mismatches;  // a new thread starts without attributes
                local.value().set("id", id);
                local.value().set("only_" + std::to_string(id), true);
                all_set.arrive_and_wait();  // every thread has set its own
                const ctxlocal::Namespace& mine = local.value();
                if (mine.get<int>("id") != id || mine.size() != 2) ++mismatches;
                for (int other = 1; other <= threads; ++other) {
                    if (other != id && mine.contains("only_" + std::to_string(other))) ++mismatches;
                }
            });
        }
        test_support::join_all(pool);
        CHECK(mismatches == 0);
        CHECK(local.value().get<int>("id") == -1);
        CHECK(local.value().size() == 1);
        local.reset();
    }
}

TEST_CASE("Namespace.Local.reset_releases_attributes") {
    Counted::live = 0;
    ctxlocal::Local<ctxlocal::Namespace> local;
    local.value().set("counted", Counted(1));
    local.value().set("name", std::string("ana"));
    REQUIRE(Counted::live == 1);
    local.reset();
    CHECK(Counted::live == 0);  // destroyed, not hidden
    CHECK_FALSE(local.has_value());
    CHECK(local.value().empty());  // the next use starts from a fresh namespace
    CHECK_THROWS_AS((void)local.value().get<std::string>("name"), ctxlocal::attribute_error);
    local.reset();
}
