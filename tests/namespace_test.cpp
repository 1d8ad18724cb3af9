// Tests for ctxlocal::Namespace (include/ctxlocal/namespace.hpp): werkzeug/Flask `g`-style attributes,
// the errors for missing and mistyped attributes (which change nothing), move-only values, string
// literals stored as std::string, moving a Namespace, value lifetimes, iteration order, value destructors
// that use the Namespace they are removed from, and Local<Namespace> as werkzeug's Local.
#include <ctxlocal/namespace.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
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

/// A connection that cannot be copied; counts the open ones.
struct Conn {
    static inline int open = 0;
    int id;
    explicit Conn(int i) : id(i) { ++open; }
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;
    ~Conn() { --open; }
};

/// A move-only handle, like a std::thread or a file descriptor, small enough to be stored inline.
struct Handle {
    static inline int live = 0;  // handles that own something (moved-from ones do not)
    int fd;
    explicit Handle(int f) : fd(f) { ++live; }
    Handle(Handle&& other) noexcept : fd(std::exchange(other.fd, -1)) {}
    Handle& operator=(Handle&&) = delete;
    ~Handle() {
        if (fd != -1) --live;
    }
};

/// A move-only value too large to be stored inline.
struct BigHandle {
    Handle handle;
    char payload[96];
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
using ns_test::BigHandle;
using ns_test::Conn;
using ns_test::Counted;
using ns_test::Handle;
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
    // A string_view argument: libc++ does not mark string_view's constructor from const char* noexcept.
    const std::string_view key = "x";
    static_assert(noexcept(ns.get_if<int>(key)));
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
// Strings: character arrays are stored as std::basic_string, pointers as pointers

TEST_CASE("Namespace.Strings.literal_is_stored_as_std_string") {
    ctxlocal::Namespace ns;
    std::string& stored = ns.set("user", "ana");
    static_assert(std::is_same_v<decltype(ns.set("user", "ana")), std::string&>);
    static_assert(std::is_same_v<ctxlocal::Namespace::stored_type<const char(&)[4]>, std::string>);
    CHECK(stored == "ana");
    CHECK(ns.get<std::string>("user") == "ana");
    CHECK(&ns.get<std::string>("user") == &stored);
    CHECK(ns.get_if<const char*>("user") == nullptr);
    ns.set("user", "bob");  // replacing keeps the type
    CHECK(ns.get<std::string>("user") == "bob");
    ns.set("empty", "");
    CHECK(ns.get<std::string>("empty").empty());
}

TEST_CASE("Namespace.Strings.char_array_is_read_up_to_its_first_nul") {
    ctxlocal::Namespace ns;
    char buffer[16] = "ab";  // the rest are NULs
    ns.set("buffer", buffer);
    CHECK(ns.get<std::string>("buffer") == "ab");
    buffer[0] = 'x';  // a copy was stored
    CHECK(ns.get<std::string>("buffer") == "ab");
    const char no_nul[3] = {'x', 'y', 'z'};  // not NUL-terminated: read no further than the array
    ns.set("no_nul", no_nul);
    CHECK(ns.get<std::string>("no_nul") == "xyz");
    const char inner_nul[6] = {'a', '\0', 'b', 'c', 'd', 'e'};
    ns.set("inner_nul", inner_nul);
    CHECK(ns.get<std::string>("inner_nul") == "a");
}

TEST_CASE("Namespace.Strings.wide_and_unicode_literals_are_stored_as_their_strings") {
    ctxlocal::Namespace ns;
    CHECK(ns.set("wide", L"w") == std::wstring(L"w"));
    CHECK(ns.set("u16", u"u") == std::u16string(u"u"));
    CHECK(ns.set("u32", U"U") == std::u32string(U"U"));
    CHECK(ns.get<std::wstring>("wide") == L"w");
    CHECK(ns.get<std::u16string>("u16") == u"u");
    CHECK(ns.get<std::u32string>("u32") == U"U");
#if defined(__cpp_char8_t)
    CHECK(ns.set("u8", u8"8") == std::u8string(u8"8"));
#endif
    // Arrays of other types still decay, as with std::decay.
    static int numbers[2] = {1, 2};
    static_assert(std::is_same_v<ctxlocal::Namespace::stored_type<int(&)[2]>, int*>);
    CHECK(ns.set("numbers", numbers) == numbers);
}

TEST_CASE("Namespace.Strings.pointer_variable_stays_a_pointer") {
    static const char message[] = "static text";
    const char* pointer = message;
    ctxlocal::Namespace ns;
    const char*& stored = ns.set("message", pointer);
    CHECK(stored == message);  // the same pointer, not a copy of the text
    CHECK(ns.get<const char*>("message") == message);
    CHECK_THROWS_AS((void)ns.get<std::string>("message"), ctxlocal::attribute_error);
}

TEST_CASE("Namespace.Strings.setdefault_get_or_and_pop_take_literals") {
    ctxlocal::Namespace ns;
    std::string& lang = ns.setdefault("lang", "en");
    CHECK(lang == "en");
    CHECK(ns.setdefault("lang", "de") == "en");  // kept
    CHECK(&ns.setdefault("lang", "de") == &lang);
    CHECK(ns.get_or<std::string>("lang", "fallback") == "en");
    CHECK(ns.get_or<std::string>("missing", "fallback") == "fallback");
    const char no_nul[2] = {'o', 'k'};
    CHECK(ns.get_or<std::string>("missing", no_nul) == "ok");
    CHECK(ns.pop<std::string>("missing", "default") == "default");
    CHECK(ns.pop<std::string>("lang", "default") == "en");
    CHECK(ns.empty());
}

TEST_CASE("Namespace.Strings.read_as_const_char_pointer_throws_saying_it_holds_std_string") {
    ctxlocal::Namespace ns;
    ns.set("user", "ana");
    const std::string expected =
        "ctxlocal::Namespace attribute 'user' holds a std::string, not a char const*";
    try {
        (void)ns.get<const char*>("user");
        FAIL("get<const char*> of a stored literal did not throw");
    } catch (const ctxlocal::attribute_error& e) {
        CHECK(std::string(e.what()) == expected);
        CHECK(e.name() == "user");
    }
    try {
        (void)ns.get_or<const char*>("user", "x");
        FAIL("get_or<const char*> of a stored literal did not throw");
    } catch (const ctxlocal::attribute_error& e) {
        CHECK(std::string(e.what()) == expected);
    }
    CHECK(ns.get<std::string>("user") == "ana");  // unchanged
}

// ---------------------------------------------------------------------------------------------------------
// Move-only values

TEST_CASE("Namespace.MoveOnly.set_get_pop_unique_ptr") {
    Conn::open = 0;
    ctxlocal::Namespace ns;
    ns.set("before", 1);
    auto conn = std::make_unique<Conn>(7);
    Conn* raw = conn.get();
    std::unique_ptr<Conn>& stored = ns.set("db", std::move(conn));
    CHECK(conn == nullptr);  // moved in
    CHECK(stored.get() == raw);
    CHECK(ns.get<std::unique_ptr<Conn>>("db")->id == 7);
    REQUIRE(ns.get_if<std::unique_ptr<Conn>>("db") != nullptr);
    CHECK(ns.get_if<std::unique_ptr<Conn>>("db")->get() == raw);
    const ctxlocal::Namespace& view = ns;
    CHECK(view.get<std::unique_ptr<Conn>>("db").get() == raw);
    CHECK(Conn::open == 1);

    std::unique_ptr<Conn> popped = ns.pop<std::unique_ptr<Conn>>("db");
    CHECK(popped.get() == raw);  // the same connection, moved out
    CHECK(Conn::open == 1);
    CHECK_FALSE(ns.contains("db"));
    CHECK(ns_test::names_of(ns) == std::vector<std::string>{"before"});
    CHECK(ns.pop<std::unique_ptr<Conn>>("db", nullptr) == nullptr);  // missing: the default
    popped.reset();
    CHECK(Conn::open == 0);
}

TEST_CASE("Namespace.MoveOnly.values_stored_directly") {
    Handle::live = 0;
    {
        ctxlocal::Namespace ns;
        Handle& small = ns.set("small", Handle(3));  // inline
        CHECK(small.fd == 3);
        BigHandle& big = ns.set("big", BigHandle{Handle(4), {}});  // too large to be inline: allocated
        CHECK(big.handle.fd == 4);
        std::vector<std::unique_ptr<Conn>>& pool = ns.set("pool", std::vector<std::unique_ptr<Conn>>{});
        pool.push_back(std::make_unique<Conn>(1));
        CHECK(Handle::live == 2);  // the temporaries were moved from and are gone
        CHECK(ns.get<Handle>("small").fd == 3);
        CHECK(ns.get<BigHandle>("big").handle.fd == 4);
        CHECK(ns.get<std::vector<std::unique_ptr<Conn>>>("pool").size() == 1);
        Handle out = ns.pop<Handle>("small");
        CHECK(out.fd == 3);
        CHECK(Handle::live == 2);  // `out` and big's handle
        ns.set("big", 0);          // replacing destroys it
        CHECK(Handle::live == 1);
    }
    CHECK(Handle::live == 0);
}

TEST_CASE("Namespace.MoveOnly.setdefault_moves_in_only_when_missing") {
    ctxlocal::Namespace ns;
    auto first = std::make_unique<int>(1);
    std::unique_ptr<int>& stored = ns.setdefault("n", std::move(first));
    CHECK(first == nullptr);
    CHECK(*stored == 1);
    auto second = std::make_unique<int>(2);
    CHECK(*ns.setdefault("n", std::move(second)) == 1);  // kept
    CHECK(second != nullptr);                            // and the argument was not moved from
    CHECK(*second == 2);
}

TEST_CASE("Namespace.Emplace.makes_the_value_in_place") {
    ctxlocal::Namespace ns;
    ns.set("first", 0);
    std::string& text = ns.emplace<std::string>("text", 3, 'x');
    CHECK(text == "xxx");
    Apple& apple = ns.emplace<Apple>("apple", 11);  // an aggregate: braces
    CHECK(apple.seeds == 11);
    std::mutex& lock = ns.emplace<std::mutex>("lock");  // cannot be moved or copied
    {
        std::lock_guard<std::mutex> guard(lock);
        CHECK(&ns.get<std::mutex>("lock") == &lock);
    }
    ns.emplace<int>("first", 5);  // replaces, keeps its place
    CHECK(ns.get<int>("first") == 5);
    CHECK(ns_test::names_of(ns) == std::vector<std::string>{"first", "text", "apple", "lock"});
    CHECK(ns.erase("lock"));
}

// ---------------------------------------------------------------------------------------------------------
// Moving a Namespace (it is not copyable)

static_assert(!std::is_copy_constructible_v<ctxlocal::Namespace>);
static_assert(!std::is_copy_assignable_v<ctxlocal::Namespace>);
static_assert(std::is_nothrow_move_constructible_v<ctxlocal::Namespace>);
static_assert(std::is_nothrow_move_assignable_v<ctxlocal::Namespace>);
static_assert(std::is_nothrow_swappable_v<ctxlocal::Namespace>);
static_assert(std::is_nothrow_default_constructible_v<ctxlocal::Namespace>);

TEST_CASE("Namespace.Move.constructor_takes_names_and_values") {
    Conn::open = 0;
    ctxlocal::Namespace ns;
    ns.set("a", 1);
    ns.set("db", std::make_unique<Conn>(2));
    ns.set("s", "text");
    ctxlocal::Namespace moved(std::move(ns));
    CHECK(ns.empty());  // NOLINT(bugprone-use-after-move): left empty, documented
    CHECK(ns.begin() == ns.end());
    CHECK(ns_test::names_of(moved) == std::vector<std::string>{"a", "db", "s"});
    CHECK(moved.get<std::unique_ptr<Conn>>("db")->id == 2);
    CHECK(moved.get<std::string>("s") == "text");
    CHECK(Conn::open == 1);
    ns.set("again", 3);  // the moved-from Namespace is usable
    CHECK(ns.get<int>("again") == 3);
}

TEST_CASE("Namespace.Move.assignment_destroys_old_values_and_takes_new_ones") {
    Counted::live = 0;
    ctxlocal::Namespace target;
    target.set("old", Counted(1));
    ctxlocal::Namespace source;
    source.set("new", Counted(2));
    source.set("db", std::make_unique<int>(3));
    REQUIRE(Counted::live == 2);
    target = std::move(source);
    CHECK(Counted::live == 1);  // the old value is destroyed
    CHECK(source.empty());      // NOLINT(bugprone-use-after-move)
    CHECK(ns_test::names_of(target) == std::vector<std::string>{"new", "db"});
    CHECK(target.get<Counted>("new").value == 2);
    ctxlocal::Namespace& same = target;
    target = std::move(same);  // self-move changes nothing
    CHECK(ns_test::names_of(target) == std::vector<std::string>{"new", "db"});
    CHECK(Counted::live == 1);
}

TEST_CASE("Namespace.Move.swap_exchanges_names_and_values") {
    ctxlocal::Namespace a;
    a.set("x", 1);
    ctxlocal::Namespace b;
    b.set("y", std::make_unique<int>(2));
    b.set("z", 3);
    swap(a, b);
    CHECK(ns_test::names_of(a) == std::vector<std::string>{"y", "z"});
    CHECK(*a.get<std::unique_ptr<int>>("y") == 2);
    CHECK(ns_test::names_of(b) == std::vector<std::string>{"x"});
    a.swap(b);
    CHECK(b.get<int>("z") == 3);
    CHECK(a.get<int>("x") == 1);
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

namespace ns_test {

/// Counts its constructions and destructions (a moved-from one's too).
struct Tally {
    static inline int made = 0;
    static inline int destroyed = 0;
    int value;
    explicit Tally(int v) : value(v) { ++made; }
    Tally(const Tally& other) : value(other.value) { ++made; }
    Tally(Tally&& other) noexcept : value(other.value) { ++made; }
    ~Tally() { ++destroyed; }
};

}  // namespace ns_test

TEST_CASE("Namespace.Lifetime.a_stored_value_is_never_moved_copied_or_destroyed_by_other_operations") {
    using ns_test::Tally;
    ctxlocal::Namespace ns;
    ns.set("early", 0);
    ns.emplace<Tally>("small", 1);  // stored inline
    ns.emplace<Tally>("later", 2);
    REQUIRE(Tally::made == 2);
    Tally::made = 0;
    Tally::destroyed = 0;
    for (int i = 0; i < 100; ++i) ns.set("name " + std::to_string(i), i);  // the storage grows
    ns.erase("early");                                                     // the names shift
    ns.set("name 5", std::string("replaced"));
    (void)ns.pop<int>("name 7");
    ctxlocal::Namespace moved(std::move(ns));
    ctxlocal::Namespace other;
    other.set("x", 1);
    swap(moved, other);        // other holds the Tallies, moved holds "x"
    moved = std::move(other);  // moved holds the Tallies again; "x" is destroyed
    CHECK(Tally::made == 0);
    CHECK(Tally::destroyed == 0);
    CHECK(moved.get<Tally>("small").value == 1);
    CHECK(moved.erase("small"));
    CHECK(Tally::destroyed == 1);  // only when removed
}

TEST_CASE("Namespace.References.stay_valid_while_other_names_change") {
    ctxlocal::Namespace ns;
    int& number = ns.set("number", 1);
    std::string& text = ns.set("text", "a short string");
    BigHandle& big = ns.set("big", BigHandle{Handle(3), {}});
    for (int i = 0; i < 100; ++i) ns.set("name " + std::to_string(i), i);
    for (int i = 0; i < 100; i += 2) ns.erase("name " + std::to_string(i));
    ctxlocal::Namespace moved(std::move(ns));
    ctxlocal::Namespace swapped;
    swapped.swap(moved);
    CHECK(&swapped.get<int>("number") == &number);
    CHECK(&swapped.get<std::string>("text") == &text);
    CHECK(&swapped.get<BigHandle>("big") == &big);
    number = 2;
    CHECK(swapped.get<int>("number") == 2);
    CHECK(text == "a short string");
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

// ---------------------------------------------------------------------------------------------------------
// Re-entrancy: a value's destructor that uses the Namespace it is being removed from

namespace ns_test {

/// Sets `count` names "<prefix> <k>" (longer than the small-string buffer) to k: enough to make the
/// Namespace grow its storage.
void write_names(ctxlocal::Namespace& ns, const std::string& prefix, int count) {
    for (int k = 0; k < count; ++k) ns.set(prefix + " " + std::to_string(k), k);
}

/// A value that calls `action` when its last copy dies, however often the Namespace copies or moves it.
std::shared_ptr<void> on_destroy(std::function<void()> action) {
    return std::shared_ptr<void>(nullptr, [action = std::move(action)](void*) { action(); });
}

/// Its destructor (every copy's, moved-from ones too) runs `*action` while `*budget` is positive.
struct Writer {
    std::function<void()>* action;
    int* budget;
    ~Writer() {
        if (*budget > 0) {
            --*budget;
            (*action)();
        }
    }
};

}  // namespace ns_test

TEST_CASE("Namespace.Reentrant.destructor_writing_during_clear") {
    Counted::live = 0;
    ctxlocal::Namespace ns;
    std::vector<std::string> problems;  // what each destructor saw that it should not have
    for (int i = 0; i < 3; ++i) {
        ns.set("hook " + std::to_string(i), ns_test::on_destroy([&ns, &problems, i] {
                   for (int other = 0; other < 3; ++other) {
                       if (ns.contains("hook " + std::to_string(other))) {
                           problems.push_back("hook " + std::to_string(i) + " saw hook " +
                                              std::to_string(other));
                       }
                   }
                   ns_test::write_names(ns, "written while clearing by hook " + std::to_string(i), 8);
                   ns.set("counted " + std::to_string(i), Counted(i));
               }));
    }
    ns.clear();
    CHECK(problems.empty());
    for (const std::string& problem : problems) CAPTURE(problem);
    CHECK(ns.empty());          // what the destructors set was cleared too
    CHECK(Counted::live == 0);  // and destroyed
    ns.set("after", 1);
    CHECK(ns_test::names_of(ns) == std::vector<std::string>{"after"});
}

TEST_CASE("Namespace.Reentrant.destructor_writing_during_erase") {
    for (const char* erased : {"first", "middle", "last"}) {
        CAPTURE(erased);
        ctxlocal::Namespace ns;
        int read_back = -1;
        auto hook = ns_test::on_destroy([&ns, &read_back] {
            read_back = ns.get_or<int>("keep", -2);
            ns_test::write_names(ns, "written while erasing", 8);
        });
        const std::string name = erased;
        if (name != "first") ns.set("first", 0);
        ns.set("keep", 7);
        ns.set(name, std::move(hook));
        if (name == "middle") ns.set("after", 2);
        hook.reset();
        const std::size_t before = ns.size();
        CHECK(ns.erase(name));
        CHECK(read_back == 7);
        CHECK_FALSE(ns.contains(name));
        REQUIRE(ns.size() == before - 1 + 8);
        for (int k = 0; k < 8; ++k) CHECK(ns.get<int>("written while erasing " + std::to_string(k)) == k);
        CHECK(ns.get<int>("keep") == 7);
        std::vector<std::string> names = ns_test::names_of(ns);
        CHECK(names.back() == "written while erasing 7");
    }
}

TEST_CASE("Namespace.Reentrant.destructor_writing_during_pop") {
    ctxlocal::Namespace ns;
    int budget = 0;
    std::function<void()> action = [&ns] { ns_test::write_names(ns, "written while popping", 8); };
    ns.set("a", 1);
    ns.set("w", ns_test::Writer{&action, &budget});
    ns.set("z", 26);
    budget = 1;  // the next destruction of a Writer writes: the moved-from value pop() leaves behind
    {
        ns_test::Writer popped = ns.pop<ns_test::Writer>("w");
        CHECK(budget == 0);
        CHECK_FALSE(ns.contains("w"));
        REQUIRE(ns.size() == 2 + 8);
        CHECK(ns.get<int>("a") == 1);
        CHECK(ns.get<int>("z") == 26);
        for (int k = 0; k < 8; ++k) CHECK(ns.get<int>("written while popping " + std::to_string(k)) == k);
    }
}

TEST_CASE("Namespace.Reentrant.destructor_writing_during_replacing_set") {
    ctxlocal::Namespace ns;
    ns.set("a", ns_test::on_destroy([&ns] { ns_test::write_names(ns, "written while replacing", 8); }));
    int& stored = ns.set("a", 5);  // destroys the old value, which grows the Namespace
    stored = 6;                    // the reference is to the value the Namespace holds now
    CHECK(ns.get<int>("a") == 6);
    CHECK(&ns.get<int>("a") == &stored);
    CHECK(ns.size() == 1 + 8);
    CHECK(ns_test::names_of(ns).front() == "a");  // kept its place
}

TEST_CASE("Namespace.Reentrant.destructor_writing_during_destruction") {
    Counted::live = 0;
    {
        auto ns = std::make_unique<ctxlocal::Namespace>();
        ctxlocal::Namespace* raw = ns.get();
        ns->set("hook", ns_test::on_destroy([raw] {
                    ns_test::write_names(*raw, "written while destroying", 8);
                    raw->set("counted", Counted(1));
                }));
        ns.reset();
    }
    CHECK(Counted::live == 0);  // what the destructor set was destroyed too
}

TEST_CASE("Namespace.Reentrant.destructor_erasing_an_earlier_name_during_replacing_set") {
    ctxlocal::Namespace ns;
    ns.set("first", 1);
    ns.set("second", 2);
    ns.set("x", ns_test::on_destroy([&ns] { ns.erase("first"); }));
    ns.set("last", 3);
    int& stored = ns.set("x", 10);  // x moves from place 2 to 1 while the old value is destroyed
    CHECK(stored == 10);
    CHECK(&stored == ns.get_if<int>("x"));
    CHECK(ns.get<int>("last") == 3);
    CHECK(ns_test::names_of(ns) == std::vector<std::string>{"second", "x", "last"});
}

TEST_CASE("Namespace.Reentrant.destructor_removing_the_name_being_set_makes_set_throw") {
    ctxlocal::Namespace ns;
    ns.set("x", ns_test::on_destroy([&ns] { ns.erase("x"); }));
    ns.set("y", 1);
    try {
        (void)ns.set("x", 5);
        FAIL("set() returned a value that its replaced value's destructor removed");
    } catch (const ctxlocal::attribute_error& e) {
        CHECK(e.name() == "x");
        CHECK(std::string(e.what()) ==
              "ctxlocal::Namespace::set: while 'x' was being set, the destructor of the value it replaced "
              "removed it (or moved the Namespace away); there is no int to return");
    }
    CHECK_FALSE(ns.contains("x"));
    CHECK(ns_test::names_of(ns) == std::vector<std::string>{"y"});
    ns.set("x", 6);  // and the Namespace is usable
    CHECK(ns.get<int>("x") == 6);
}

TEST_CASE("Namespace.Reentrant.destructor_setting_the_name_being_set_to_another_type_makes_set_throw") {
    ctxlocal::Namespace ns;
    ns.set("x", ns_test::on_destroy([&ns] { ns.set("x", std::string("from the destructor")); }));
    try {
        (void)ns.set("x", 5);
        FAIL("set() returned an int that its replaced value's destructor had replaced");
    } catch (const ctxlocal::attribute_error& e) {
        CHECK(e.name() == "x");
        CHECK(std::string(e.what()) ==
              "ctxlocal::Namespace::set: while 'x' was being set, the destructor of the value it replaced "
              "set it to a std::string; there is no int to return");
    }
    CHECK(ns.get<std::string>("x") == "from the destructor");
    CHECK(ns.size() == 1);
}

TEST_CASE("Namespace.Reentrant.names_set_during_clear_are_cleared_in_turn") {
    ctxlocal::Namespace ns;
    std::vector<std::string> destroyed;
    ns.set("a", ns_test::on_destroy([&] {
               destroyed.push_back("a");
               ns.set("b", ns_test::on_destroy([&] {
                          destroyed.push_back("b");
                          ns.set("c", ns_test::on_destroy([&] { destroyed.push_back("c"); }));
                      }));
           }));
    ns.set("z", ns_test::on_destroy([&] { destroyed.push_back("z"); }));
    ns.clear();
    CHECK(destroyed == std::vector<std::string>{"a", "z", "b", "c"});
    CHECK(ns.empty());
}

namespace ns_test {

/// Its constructor removes "first" and adds eight names to the Namespace it is being stored into.
struct Meddler {
    int value;
    Meddler(ctxlocal::Namespace& ns, int v) : value(v) {
        ns.erase("first");
        write_names(ns, "written by a constructor " + std::to_string(v), 8);
    }
};

}  // namespace ns_test

TEST_CASE("Namespace.Reentrant.constructor_changing_the_namespace_it_is_stored_into") {
    ctxlocal::Namespace ns;
    SUBCASE("replacing") {
        ns.set("first", 0);
        ns.set("x", 1);
        ns_test::Meddler& stored = ns.emplace<ns_test::Meddler>("x", ns, 2);  // x moves to place 0
        CHECK(&stored == ns.get_if<ns_test::Meddler>("x"));
        CHECK(stored.value == 2);
        CHECK(ns.size() == 1 + 8);
        CHECK(ns_test::names_of(ns).front() == "x");
    }
    SUBCASE("adding") {
        ns.set("first", 0);
        ns.set("a", 1);
        ns_test::Meddler& stored = ns.emplace<ns_test::Meddler>("x", ns, 3);  // the storage grows meanwhile
        CHECK(&stored == ns.get_if<ns_test::Meddler>("x"));
        CHECK(stored.value == 3);
        CHECK(ns.size() == 1 + 8 + 1);
        CHECK(ns_test::names_of(ns).front() == "a");
        CHECK(ns_test::names_of(ns).back() == "x");
    }
}
