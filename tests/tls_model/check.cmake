# Reads the disassembly of one function of a shared library and checks whether it calls out.
#
#   cmake -DOBJDUMP=<objdump> -DLIBRARY=<lib.so> -DFUNCTION=<symbol> -DARCH=x86_64|aarch64 \
#         -DMODE=no_call|control -P check.cmake
#
# The function is the block `<FUNCTION>:` of `objdump -d` (GNU or LLVM), together with the blocks of its
# split-off parts (`<FUNCTION.cold>` and the like), which the compiler may move the unlikely path into.
#
# MODE=no_call  passes only if the function makes no call (call, bl, blr), mentions no __tls_get_addr and
#               never branches out of itself (no tail call: every jump targets FUNCTION or a part of it;
#               no indirect jump).
# MODE=control  the same function built with -DCTXLOCAL_TLS_MODEL=: passes only if it calls
#               __tls_get_addr (x86-64, or aarch64 with -mtls-dialect=trad) or a TLS descriptor
#               resolver (an indirect call: aarch64's default TLS dialect, x86-64 with
#               -mtls-dialect=gnu2). This proves that the check above sees a thread-local access that
#               calls out, i.e. that it can fail.
cmake_minimum_required(VERSION 3.14)

foreach(var OBJDUMP LIBRARY FUNCTION ARCH MODE)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
        message(FATAL_ERROR "check.cmake: -D${var}=... is required")
    endif()
endforeach()
if(NOT MODE STREQUAL "no_call" AND NOT MODE STREQUAL "control")
    message(FATAL_ERROR "check.cmake: MODE must be no_call or control, not '${MODE}'")
endif()
if(NOT ARCH STREQUAL "x86_64" AND NOT ARCH STREQUAL "aarch64")
    message(FATAL_ERROR "check.cmake: ARCH must be x86_64 or aarch64, not '${ARCH}'")
endif()

set(ENV{LC_ALL} C)
execute_process(
    COMMAND "${OBJDUMP}" -d --no-show-raw-insn "${LIBRARY}"
    RESULT_VARIABLE result
    OUTPUT_VARIABLE output
    ERROR_VARIABLE errors)
if(NOT result EQUAL 0)
    message(FATAL_ERROR "FAIL: ${OBJDUMP} -d ${LIBRARY} exited with ${result}:\n${errors}")
endif()

# One list element per line. CMake lists are ';'-separated: stand a control character in for ';' (AT&T
# syntax has none, but comments may) and for the brackets that CMake would treat as list nesting.
string(ASCII 1 semicolon)
string(REPLACE ";" "${semicolon}" output "${output}")
string(REPLACE "[" "(" output "${output}")
string(REPLACE "]" ")" output "${output}")
string(REPLACE "\n" ";" lines "${output}")

# The symbol as a regex (C++ names have no regex metacharacters other than these).
string(REGEX REPLACE "([.$+*?()^|])" "\\\\\\1" function_regex "${FUNCTION}")
set(part_regex "^${function_regex}(\\.[A-Za-z0-9_.]+)?$")

set(body "")
set(inside OFF)
set(found OFF)
foreach(line IN LISTS lines)
    if(line MATCHES "^[0-9a-fA-F]+ <([^>]*)>:")
        if(CMAKE_MATCH_1 MATCHES "${part_regex}")
            set(inside ON)
            set(found ON)
            string(APPEND body "${line}\n")
        else()
            set(inside OFF)
        endif()
        continue()
    endif()
    if(inside AND line MATCHES "^[ \t]*[0-9a-fA-F]+:")
        string(APPEND body "${line}\n")
        list(APPEND instructions "${line}")
    elseif(inside AND line STREQUAL "")
        set(inside OFF)
    endif()
endforeach()
if(NOT found)
    message(FATAL_ERROR "FAIL: no function <${FUNCTION}> in the disassembly of ${LIBRARY}")
endif()
message("${LIBRARY}, <${FUNCTION}>:\n${body}")

set(calls "")       # call instructions
set(tls_calls "")   # calls of __tls_get_addr or of a TLS descriptor resolver
set(leaves "")      # jumps out of the function (tail calls), indirect jumps
set(mentions "")    # any line that names __tls_get_addr
if(ARCH STREQUAL "x86_64")
    set(call_regex "(^|[ \t])call[lq]?[ \t]")
    set(indirect_call_regex "(^|[ \t])call[lq]?[ \t]+\\*")
    set(jump_regex "(^|[ \t])j[a-z]+[ \t]")
    set(indirect_jump_regex "(^|[ \t])j[a-z]+[ \t]+\\*")
    set(comment_regex "#.*$")
else()
    set(call_regex "(^|[ \t])(bl|blr|blraaz?|blrabz?)[ \t]")
    set(indirect_call_regex "(^|[ \t])(blr|blraaz?|blrabz?)[ \t]")
    set(jump_regex "(^|[ \t])(b|b\\.[a-z]+|cbn?z|tbn?z|br|braaz?|brabz?)[ \t]")
    set(indirect_jump_regex "(^|[ \t])(br|braaz?|brabz?)[ \t]")
    set(comment_regex "//.*$")
endif()
foreach(line IN LISTS instructions)
    string(REPLACE "${semicolon}" ";" line "${line}")
    if(line MATCHES "__tls_get_addr")
        list(APPEND mentions "${line}")
    endif()
    # The instruction alone: no address, no comment (objdump names data symbols there).
    string(REGEX REPLACE "^[ \t]*[0-9a-fA-F]+:" "" code "${line}")
    string(REGEX REPLACE "${comment_regex}" "" code "${code}")
    if(code MATCHES "${call_regex}")
        list(APPEND calls "${line}")
        if(line MATCHES "__tls_get_addr" OR code MATCHES "${indirect_call_regex}")
            list(APPEND tls_calls "${line}")
        endif()
    elseif(code MATCHES "${indirect_jump_regex}")
        list(APPEND leaves "${line}")
    elseif(code MATCHES "${jump_regex}")
        if(NOT code MATCHES "<([^>+]*)(\\+0x[0-9a-fA-F]+)?>" OR NOT CMAKE_MATCH_1 MATCHES "${part_regex}")
            list(APPEND leaves "${line}")
        endif()
    endif()
endforeach()

function(report title items)
    foreach(item IN LISTS items)
        string(APPEND title "\n    ${item}")
    endforeach()
    message("${title}")
endfunction()

if(MODE STREQUAL "no_call")
    if(calls OR leaves OR mentions)
        report("calls:" "${calls}")
        report("jumps out of the function:" "${leaves}")
        report("lines naming __tls_get_addr:" "${mentions}")
        message(FATAL_ERROR "FAIL: <${FUNCTION}> calls out; Local::get() must be plain loads in a shared "
                            "library (CTXLOCAL_TLS_MODEL initial-exec)")
    endif()
    message("PASS: <${FUNCTION}> makes no call and does not branch out of itself")
    return()
endif()

if(NOT tls_calls)
    report("calls:" "${calls}")
    message(FATAL_ERROR "FAIL (control): <${FUNCTION}>, built with -DCTXLOCAL_TLS_MODEL=, makes no call of "
                        "__tls_get_addr or of a TLS descriptor: the check cannot tell the models apart")
endif()
report("PASS (control): with the compiler's default model it calls out for the thread-local:" "${tls_calls}")
