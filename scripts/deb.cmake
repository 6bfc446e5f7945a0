# The Debian package (`make deb`, issue 20): install rules for what the package holds, and CPack's
# DEB generator over them. Included only with -DBW_DEB=ON, so test builds never run the binary at
# build time. The package installs files and nothing else: no user (the units use DynamicUser),
# no /etc entries (the settings example goes to the documentation), no maintainer scripts, so
# removing it removes everything it brought.
include(GNUInstallDirs)
set(bw_deb_dir ${CMAKE_BINARY_DIR}/deb-files)
file(MAKE_DIRECTORY ${bw_deb_dir})

# The units run the packaged binary in /usr/bin, not `make install`'s /usr/local/bin.
foreach(unit bankworker.service bankworker-migrate.service)
  file(READ ${CMAKE_SOURCE_DIR}/systemd/${unit} bw_unit_text)
  string(REPLACE "/usr/local/" "/usr/" bw_unit_text "${bw_unit_text}")
  file(WRITE ${bw_deb_dir}/${unit} "${bw_unit_text}")
endforeach()

# The man page and the completion come from the binary's own help table (worker/cli_help.cpp).
add_custom_command(
  OUTPUT ${bw_deb_dir}/bankworker.1.gz ${bw_deb_dir}/bankworker.bash
  COMMAND sh -c "\"$1\" man | gzip -9n > \"$2\"/bankworker.1.gz && \"$1\" completion bash > \"$2\"/bankworker.bash"
          sh $<TARGET_FILE:bankworker> ${bw_deb_dir}
  DEPENDS bankworker
  VERBATIM)
add_custom_target(bankworker_deb_files ALL DEPENDS ${bw_deb_dir}/bankworker.1.gz ${bw_deb_dir}/bankworker.bash)

string(TIMESTAMP bw_deb_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
set(bw_deb_maintainer "bankworker maintainers <bankworker@example.org>")
file(WRITE ${bw_deb_dir}/changelog.Debian
     "bankworker (${PROJECT_VERSION}-1) unstable; urgency=medium\n\n"
     "  * Built from the source tree (make deb).\n\n"
     " -- ${bw_deb_maintainer}  ${bw_deb_date}\n")
execute_process(COMMAND gzip -9nf ${bw_deb_dir}/changelog.Debian)
file(WRITE ${bw_deb_dir}/copyright
     "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
     "Upstream-Name: bankworker\n\n"
     "Files: *\n"
     "Copyright: the bankworker authors\n"
     "License: proprietary\n"
     " No license is granted to anyone outside the project; all rights reserved.\n")

install(TARGETS bankworker RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${bw_deb_dir}/bankworker.service ${bw_deb_dir}/bankworker-migrate.service
        DESTINATION /lib/systemd/system)
install(FILES ${bw_deb_dir}/bankworker.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${bw_deb_dir}/bankworker.bash DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions
        RENAME bankworker)
install(FILES ${bw_deb_dir}/copyright ${bw_deb_dir}/changelog.Debian.gz DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${CMAKE_SOURCE_DIR}/systemd/bankworker.env.example DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME bankworker)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${bw_deb_maintainer}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "bank transaction sync and payment webhook ledger worker")
# The extended description only: CPack puts the summary above it as the synopsis line.
# One string: separate strings would make a CMake list, joined with ';'.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "bankworker syncs Plaid bank transactions, posts Stripe webhooks to a
double-entry ledger in PostgreSQL and holds Plaid access tokens
envelope-encrypted.")
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_OUTPUT_FILE_PREFIX ${CMAKE_BINARY_DIR}/packages)
include(CPack)
