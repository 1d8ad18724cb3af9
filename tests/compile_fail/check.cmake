# Runs one compile-fail case: compiles SOURCE with -fsyntax-only and checks the outcome.
#
#   cmake -DCOMPILER=<compiler;[args]> -DSOURCE=<file.cpp> -DINCLUDE_DIR=<dir> -DFLAGS="<flags>" \
#         -DMODE=fail|control -P check.cmake
#
# MODE=fail     compiles SOURCE as is: passes only if compilation FAILS and every `// expect: <regex>` line
#               of SOURCE matches some line of the compiler's output (one line each: a regex does not
#               span lines). A regex cannot contain ';' (CMake list separator): use '.' for it.
# MODE=control  compiles SOURCE with -DCTXLOCAL_COMPILE_FAIL_CONTROL, which swaps the misuse for correct
#               code: passes only if compilation SUCCEEDS. This proves that the failure above is due to the
#               misuse, not to a broken include or test file.
# FLAGS is one space-separated string (e.g. "-std=c++17 -Wall"). COMPILER is a CMake list (meson passes
# e.g. "ccache;c++").
cmake_minimum_required(VERSION 3.14)

foreach(var COMPILER SOURCE INCLUDE_DIR MODE)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
        message(FATAL_ERROR "check.cmake: -D${var}=... is required")
    endif()
endforeach()
if(NOT MODE STREQUAL "fail" AND NOT MODE STREQUAL "control")
    message(FATAL_ERROR "check.cmake: MODE must be fail or control, not '${MODE}'")
endif()

file(STRINGS "${SOURCE}" expect_lines REGEX "^// expect: ")
if(NOT expect_lines)
    message(FATAL_ERROR "check.cmake: ${SOURCE} has no `// expect: <regex>` line")
endif()

separate_arguments(flags UNIX_COMMAND "${FLAGS}")
set(command ${COMPILER} ${flags} "-I${INCLUDE_DIR}" -fsyntax-only)
if(MODE STREQUAL "control")
    list(APPEND command -DCTXLOCAL_COMPILE_FAIL_CONTROL)
endif()
list(APPEND command "${SOURCE}")

# The C locale: plain ASCII quotes in GCC's diagnostics.
set(ENV{LC_ALL} C)
execute_process(COMMAND ${command} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
list(JOIN command " " command_text)
message("${command_text}\n-> exit ${result}\n${output}")

if(MODE STREQUAL "control")
    if(NOT result EQUAL 0)
        message(FATAL_ERROR "FAIL: the control (-DCTXLOCAL_COMPILE_FAIL_CONTROL) does not compile: the "
                            "compile-fail case is broken, not proven")
    endif()
    message("PASS: the control compiles")
    return()
endif()

if(result EQUAL 0)
    message(FATAL_ERROR "FAIL: the misuse compiled; it must be refused at compile time")
endif()
if(NOT result MATCHES "^[0-9]+$")
    message(FATAL_ERROR "FAIL: the compiler did not run: ${result}")
endif()

# Split the output into lines. CMake lists are ';'-separated: stand a control character in for ';' while
# splitting, and put it back in each line.
string(ASCII 1 semicolon)
string(REPLACE ";" "${semicolon}" escaped "${output}")
string(REPLACE "\n" ";" lines "${escaped}")
set(missing 0)
foreach(expect_line IN LISTS expect_lines)
    string(REGEX REPLACE "^// expect: " "" regex "${expect_line}")
    set(found "")
    foreach(line IN LISTS lines)
        string(REPLACE "${semicolon}" ";" line "${line}")
        if(line MATCHES "${regex}")
            set(found "${line}")
            break()
        endif()
    endforeach()
    if(found STREQUAL "")
        message("missing: no line of the output matches: ${regex}")
        set(missing 1)
    else()
        message("matched: ${regex}\n     in: ${found}")
    endif()
endforeach()
if(missing)
    message(FATAL_ERROR "FAIL: compilation failed, but not with the expected diagnostic")
endif()
message("PASS: refused at compile time with the expected diagnostic")
