# Reads the version of ctxlocal from include/ctxlocal/version.hpp, the one place it is defined.
#
# ctxlocal_read_version(<out-var> <version.hpp>) sets <out-var> to "MAJOR.MINOR.PATCH" and fails the
# configure step with a message naming the file if any of the three macros is missing.
function(ctxlocal_read_version out_var header)
    if(NOT EXISTS "${header}")
        message(FATAL_ERROR "ctxlocal: ${header} not found; it defines CTXLOCAL_VERSION_MAJOR/MINOR/PATCH "
                            "and the build reads the project version from it.")
    endif()
    file(STRINGS "${header}" lines REGEX "^#define CTXLOCAL_VERSION_(MAJOR|MINOR|PATCH) +[0-9]+")
    set(parts)
    foreach(part MAJOR MINOR PATCH)
        if(NOT lines MATCHES "CTXLOCAL_VERSION_${part} +([0-9]+)")
            message(FATAL_ERROR "ctxlocal: no '#define CTXLOCAL_VERSION_${part} <number>' line in ${header}.")
        endif()
        list(APPEND parts "${CMAKE_MATCH_1}")
    endforeach()
    list(JOIN parts "." version)
    set(${out_var} "${version}" PARENT_SCOPE)
endfunction()
