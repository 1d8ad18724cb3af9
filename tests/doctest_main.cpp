// The one doctest main shared by every tests/*_test.cpp executable (the test files define no main).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
