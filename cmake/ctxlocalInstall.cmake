# Install rules for ctxlocal (included from the top-level CMakeLists.txt when CTXLOCAL_INSTALL is ON).
#
#   <prefix>/include/ctxlocal/...                      headers
#   <prefix>/share/cmake/ctxlocal/ctxlocalConfig.cmake  find_package(ctxlocal CONFIG) -> ctxlocal::ctxlocal
#   <prefix>/share/pkgconfig/ctxlocal.pc                pkg-config --cflags --libs ctxlocal
#
# Both package files are relocatable: installing with `cmake --install <build> --prefix <dir>` works.
include(CMakePackageConfigHelpers)

set(CTXLOCAL_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/ctxlocal"
    CACHE STRING "Where to install ctxlocalConfig.cmake, relative to the install prefix")
set(CTXLOCAL_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_DATADIR}/pkgconfig"
    CACHE STRING "Where to install ctxlocal.pc, relative to the install prefix")
mark_as_advanced(CTXLOCAL_INSTALL_CMAKEDIR CTXLOCAL_INSTALL_PKGCONFIGDIR)

if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.23)
    install(
        TARGETS ctxlocal
        EXPORT ctxlocalTargets
        FILE_SET HEADERS DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        FILE_SET optional_headers DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        # Also as a plain include directory: consumers on CMake < 3.23 ignore the exported FILE_SET.
        INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
else()
    install(TARGETS ctxlocal EXPORT ctxlocalTargets)
    install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
endif()

install(
    EXPORT ctxlocalTargets
    NAMESPACE ctxlocal::
    DESTINATION "${CTXLOCAL_INSTALL_CMAKEDIR}")

configure_package_config_file(
    "${PROJECT_SOURCE_DIR}/cmake/ctxlocalConfig.cmake.in" "${PROJECT_BINARY_DIR}/ctxlocalConfig.cmake"
    INSTALL_DESTINATION "${CTXLOCAL_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
    "${PROJECT_BINARY_DIR}/ctxlocalConfigVersion.cmake"
    COMPATIBILITY SameMajorVersion
    ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/ctxlocalConfig.cmake" "${PROJECT_BINARY_DIR}/ctxlocalConfigVersion.cmake"
        DESTINATION "${CTXLOCAL_INSTALL_CMAKEDIR}")

# ctxlocal.pc locates the prefix from its own location (${pcfiledir}), so it stays right after
# `cmake --install --prefix` or a DESTDIR install.
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
    set(CTXLOCAL_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
    set(CTXLOCAL_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
if(IS_ABSOLUTE "${CTXLOCAL_INSTALL_PKGCONFIGDIR}")
    set(CTXLOCAL_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
    file(RELATIVE_PATH _ctxlocal_pc_to_prefix "/prefix/${CTXLOCAL_INSTALL_PKGCONFIGDIR}" "/prefix")
    string(REGEX REPLACE "/$" "" _ctxlocal_pc_to_prefix "${_ctxlocal_pc_to_prefix}")
    set(CTXLOCAL_PC_PREFIX "\${pcfiledir}/${_ctxlocal_pc_to_prefix}")
endif()
configure_file("${PROJECT_SOURCE_DIR}/cmake/ctxlocal.pc.in" "${PROJECT_BINARY_DIR}/ctxlocal.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/ctxlocal.pc" DESTINATION "${CTXLOCAL_INSTALL_PKGCONFIGDIR}")
