# Build settings for ctxlocal's OWN targets (tests, examples, benchmarks). Never applied to the INTERFACE
# target `ctxlocal`, so consumers never inherit our warning flags or sanitizers.
#
#   CTXLOCAL_WERROR    ON/OFF   add -Werror (default ON when ctxlocal is the top-level project)
#   CTXLOCAL_SANITIZE  string   e.g. "thread" or "address,undefined": passed to -fsanitize=
#
# ctxlocal_target_options(<target>...) applies -Wall -Wextra -Wpedantic, -Werror if enabled, and the
# sanitizer compile/link flags.

function(ctxlocal_target_options)
    foreach(target IN LISTS ARGN)
        if(MSVC)
            target_compile_options(${target} PRIVATE /W4 /permissive-)
            if(CTXLOCAL_WERROR)
                target_compile_options(${target} PRIVATE /WX)
            endif()
        else()
            target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
            if(CTXLOCAL_WERROR)
                target_compile_options(${target} PRIVATE -Werror)
            endif()
        endif()
        if(CTXLOCAL_SANITIZE)
            set(flags "-fsanitize=${CTXLOCAL_SANITIZE}" -fno-omit-frame-pointer)
            if(CTXLOCAL_SANITIZE MATCHES "undefined")
                list(APPEND flags -fno-sanitize-recover=all)
            endif()
            target_compile_options(${target} PRIVATE ${flags})
            target_link_options(${target} PRIVATE ${flags})
        endif()
    endforeach()
endfunction()
