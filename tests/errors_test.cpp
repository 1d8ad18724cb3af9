// Tests for the exception hierarchy (include/ctxlocal/errors.hpp) and the version macros
// (include/ctxlocal/version.hpp).
#include <ctxlocal/errors.hpp>
#include <ctxlocal/version.hpp>

#include <doctest/doctest.h>

#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

// ---------------------------------------------------------------------------------------------------------
// Hierarchy

static_assert(std::is_base_of_v<std::runtime_error, ctxlocal::error>);
static_assert(std::is_base_of_v<ctxlocal::error, ctxlocal::unbound_error>);
static_assert(std::is_base_of_v<ctxlocal::error, ctxlocal::context_error>);
static_assert(std::is_base_of_v<ctxlocal::error, ctxlocal::attribute_error>);
static_assert(std::is_base_of_v<ctxlocal::error, ctxlocal::teardown_error>);
// Public, unambiguous bases: a handler for the base really catches them.
static_assert(std::is_convertible_v<ctxlocal::error*, std::runtime_error*>);
static_assert(std::is_convertible_v<ctxlocal::unbound_error*, ctxlocal::error*>);
static_assert(std::is_convertible_v<ctxlocal::context_error*, ctxlocal::error*>);
static_assert(std::is_convertible_v<ctxlocal::attribute_error*, ctxlocal::error*>);
static_assert(std::is_convertible_v<ctxlocal::teardown_error*, ctxlocal::error*>);
// The kinds are distinct: catching one never swallows another.
static_assert(!std::is_base_of_v<ctxlocal::unbound_error, ctxlocal::context_error>);
static_assert(!std::is_base_of_v<ctxlocal::context_error, ctxlocal::unbound_error>);
static_assert(!std::is_base_of_v<ctxlocal::unbound_error, ctxlocal::attribute_error>);
static_assert(!std::is_base_of_v<ctxlocal::attribute_error, ctxlocal::unbound_error>);

namespace {

/// Throws `e` and reports whether a handler for B caught it with its message intact.
template <class B, class E>
bool caught_as(const E& e, const std::string& message) {
    try {
        throw e;
    } catch (const B& caught) {
        return caught.what() == message;
    } catch (...) {
        return false;
    }
}

}  // namespace

TEST_CASE("Errors.Hierarchy.each_caught_as_error_and_runtime_error") {
    const ctxlocal::unbound_error unbound("not bound");
    const ctxlocal::context_error context("bad pop");
    const ctxlocal::attribute_error attribute("user", "no attribute 'user'");
    const ctxlocal::teardown_error teardown("2 teardown callbacks failed", {});
    const ctxlocal::error plain("plain");

    CHECK(caught_as<ctxlocal::error>(unbound, "not bound"));
    CHECK(caught_as<std::runtime_error>(unbound, "not bound"));
    CHECK(caught_as<std::exception>(unbound, "not bound"));
    CHECK(caught_as<ctxlocal::error>(context, "bad pop"));
    CHECK(caught_as<std::runtime_error>(context, "bad pop"));
    CHECK(caught_as<ctxlocal::error>(attribute, "no attribute 'user'"));
    CHECK(caught_as<std::runtime_error>(attribute, "no attribute 'user'"));
    CHECK(caught_as<ctxlocal::error>(teardown, "2 teardown callbacks failed"));
    CHECK(caught_as<std::runtime_error>(plain, "plain"));
}

TEST_CASE("Errors.Hierarchy.kinds_do_not_catch_each_other") {
    CHECK_FALSE(caught_as<ctxlocal::context_error>(ctxlocal::unbound_error("u"), "u"));
    CHECK_FALSE(caught_as<ctxlocal::unbound_error>(ctxlocal::context_error("c"), "c"));
    CHECK_FALSE(caught_as<ctxlocal::unbound_error>(ctxlocal::attribute_error("n", "a"), "a"));
    CHECK_FALSE(caught_as<ctxlocal::attribute_error>(ctxlocal::error("e"), "e"));
}

TEST_CASE("Errors.Message.what_returns_given_text") {
    CHECK(std::string(ctxlocal::error("plain message").what()) == "plain message");
    CHECK(std::string(ctxlocal::unbound_error(std::string("from std::string")).what()) == "from std::string");
    CHECK(std::string(ctxlocal::context_error("Cannot pop this context").what()) ==
          "Cannot pop this context");
}

TEST_CASE("Errors.AttributeError.carries_name_and_message") {
    const ctxlocal::attribute_error e("user_id", "ctxlocal::Namespace has no attribute 'user_id'");
    CHECK(e.name() == "user_id");
    CHECK(std::string(e.what()) == "ctxlocal::Namespace has no attribute 'user_id'");
    const ctxlocal::attribute_error copy = e;  // exceptions are copied when thrown and rethrown
    CHECK(copy.name() == "user_id");
    CHECK(std::string(copy.what()) == e.what());
}

TEST_CASE("Errors.TeardownError.keeps_every_error_in_order") {
    std::vector<std::exception_ptr> errors;
    errors.push_back(std::make_exception_ptr(std::runtime_error("first")));
    errors.push_back(std::make_exception_ptr(ctxlocal::context_error("second")));
    const ctxlocal::teardown_error e("teardown failed: first; second", errors);
    CHECK(std::string(e.what()) == "teardown failed: first; second");
    REQUIRE(e.errors().size() == 2);
    CHECK_THROWS_WITH_AS(std::rethrow_exception(e.errors()[0]), "first", std::runtime_error);
    CHECK_THROWS_WITH_AS(std::rethrow_exception(e.errors()[1]), "second", ctxlocal::context_error);
    const ctxlocal::teardown_error copy = e;
    CHECK(copy.errors().size() == 2);
    CHECK(copy.errors()[0] == e.errors()[0]);
}

// ---------------------------------------------------------------------------------------------------------
// Version macros

// Usable by the preprocessor, which is how users test for a version.
#if !defined(CTXLOCAL_VERSION_MAJOR) || !defined(CTXLOCAL_VERSION_MINOR) || \
    !defined(CTXLOCAL_VERSION_PATCH) || !defined(CTXLOCAL_VERSION)
#error "ctxlocal/version.hpp must define CTXLOCAL_VERSION_MAJOR/MINOR/PATCH and CTXLOCAL_VERSION"
#endif
#if CTXLOCAL_VERSION != CTXLOCAL_VERSION_MAJOR * 10000 + CTXLOCAL_VERSION_MINOR * 100 + CTXLOCAL_VERSION_PATCH
#error "CTXLOCAL_VERSION must be MAJOR * 10000 + MINOR * 100 + PATCH"
#endif

TEST_CASE("Version.Macros.combine_major_minor_patch") {
    static_assert(CTXLOCAL_VERSION_MAJOR >= 0 && CTXLOCAL_VERSION_MINOR >= 0 && CTXLOCAL_VERSION_PATCH >= 0);
    // Each part fits its two decimal digits, so the combined number orders versions correctly.
    static_assert(CTXLOCAL_VERSION_MINOR < 100 && CTXLOCAL_VERSION_PATCH < 100);
    static_assert(CTXLOCAL_VERSION ==
                  CTXLOCAL_VERSION_MAJOR * 10000 + CTXLOCAL_VERSION_MINOR * 100 + CTXLOCAL_VERSION_PATCH);
    CHECK(CTXLOCAL_VERSION / 10000 == CTXLOCAL_VERSION_MAJOR);
    CHECK(CTXLOCAL_VERSION / 100 % 100 == CTXLOCAL_VERSION_MINOR);
    CHECK(CTXLOCAL_VERSION % 100 == CTXLOCAL_VERSION_PATCH);
    CHECK(CTXLOCAL_VERSION > 0);  // 0.0.0 is not a release
}
