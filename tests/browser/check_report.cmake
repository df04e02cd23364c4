# Opens a report.html in headless Chromium from disk (file://) and checks what a reader would see:
#   1. a copy with tests/browser/selfcheck_{head,body}.js injected is loaded with --dump-dom; the in-page check
#      reports errors, and for every chart the data marks visible on screen, axis labels and legend entries;
#   2. the unmodified report is loaded again for a full-page screenshot (SCREENSHOT), which a person looks at;
#   both runs log the browser console to stderr, and any console line fails the test (the report has no script).
# Variables: REPORT, NAME, OUT_DIR, SCREENSHOT, EXPECT_CHARTS and EXPECT_RECORDED (comma-separated ids),
# SOURCE_DIR (tests/browser). Without Chromium it prints "BROWSER TEST SKIPPED" (ctest's SKIP_REGULAR_EXPRESSION),
# unless TAXON_REQUIRE_BROWSER is set (.ci/run sets it: CI installs Chromium, so there the test must run).
cmake_minimum_required(VERSION 3.21)

find_program(CHROMIUM NAMES chromium chromium-browser google-chrome-stable google-chrome)
if(NOT CHROMIUM)
  if(DEFINED ENV{TAXON_REQUIRE_BROWSER} AND NOT "$ENV{TAXON_REQUIRE_BROWSER}" STREQUAL "" AND NOT "$ENV{TAXON_REQUIRE_BROWSER}" STREQUAL "0")
    message(FATAL_ERROR "report browser test: TAXON_REQUIRE_BROWSER is set but no chromium is installed "
                        "(scripts/install-deps installs Debian's chromium)")
  endif()
  message("\n"
          "*****************************************************************************************\n"
          "*** BROWSER TEST SKIPPED: chromium is not installed, so report.html was NOT checked    ***\n"
          "*** in a browser. Run scripts/install-deps (it installs Debian's chromium) and retest. ***\n"
          "*****************************************************************************************\n")
  return()
endif()

if(NOT EXISTS "${REPORT}")
  message(FATAL_ERROR "report browser test: ${REPORT} does not exist")
endif()
file(MAKE_DIRECTORY "${OUT_DIR}")
set(_profile "${OUT_DIR}/chromium-profile-${NAME}")
file(REMOVE_RECURSE "${_profile}")
# --no-sandbox: containers and root (CI) have no user namespaces for Chromium's sandbox.
set(_flags --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run --disable-extensions
           --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars
           --user-data-dir=${_profile} --enable-logging=stderr --v=0 --force-device-scale-factor=1)

# Console output of a page ("...:INFO:CONSOLE:12] "message", source: file:///..."): every line is an error here.
function(check_console stderr_text what)
  string(REGEX MATCHALL "[^\n]*:CONSOLE[^\n]*" _console "${stderr_text}")
  if(_console)
    string(REPLACE ";" "\n  " _lines "${_console}")
    message(FATAL_ERROR "report browser test (${NAME}): the console printed messages while loading ${what}:\n  ${_lines}")
  endif()
endfunction()

# 1. The in-page check.
file(READ "${REPORT}" _html)
file(READ "${SOURCE_DIR}/selfcheck_head.js" _head_js)
file(READ "${SOURCE_DIR}/selfcheck_body.js" _body_js)
string(FIND "${_html}" "<head>" _head_at)
string(FIND "${_html}" "</body>" _body_at REVERSE)
if(_head_at LESS 0 OR _body_at LESS 0)
  message(FATAL_ERROR "report browser test: ${REPORT} has no <head> or no </body>")
endif()
string(REPLACE "<head>" "<head><script>${_head_js}</script>" _html "${_html}")
string(FIND "${_html}" "</body>" _body_at REVERSE)
string(SUBSTRING "${_html}" 0 ${_body_at} _before)
string(SUBSTRING "${_html}" ${_body_at} -1 _after)
set(_checked "${OUT_DIR}/${NAME}-selfcheck.html")
file(WRITE "${_checked}" "${_before}<script>${_body_js}</script>${_after}")

execute_process(COMMAND ${CHROMIUM} ${_flags} --window-size=1280,900 --dump-dom "file://${_checked}"
                OUTPUT_VARIABLE _dom ERROR_VARIABLE _err RESULT_VARIABLE _rc TIMEOUT 120)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "report browser test (${NAME}): chromium --dump-dom exited with ${_rc}:\n${_err}")
endif()
check_console("${_err}" "${_checked}")
string(REGEX MATCH "<pre id=\"taxon-selfcheck\">([^<]*)</pre>" _m "${_dom}")
if(NOT _m)
  string(LENGTH "${_dom}" _len)
  message(FATAL_ERROR "report browser test (${NAME}): the in-page check wrote no result (DOM of ${_len} bytes); "
                      "did the page's scripts run?\n${_err}")
endif()
set(_json "${CMAKE_MATCH_1}")
string(REPLACE "&quot;" "\"" _json "${_json}")
string(REPLACE "&lt;" "<" _json "${_json}")
string(REPLACE "&gt;" ">" _json "${_json}")
string(REPLACE "&amp;" "&" _json "${_json}")

set(_problems "")
string(JSON _nerr LENGTH "${_json}" errors)
if(_nerr GREATER 0)
  string(JSON _errors GET "${_json}" errors)
  string(APPEND _problems "\n  page errors: ${_errors}")
endif()

string(JSON _ncharts LENGTH "${_json}" charts)
set(_seen "")
if(_ncharts GREATER 0)
  math(EXPR _last "${_ncharts} - 1")
  foreach(_i RANGE ${_last})
    string(JSON _id GET "${_json}" charts ${_i} id)
    string(JSON _expected GET "${_json}" charts ${_i} expected)
    string(JSON _visible GET "${_json}" charts ${_i} visible)
    string(JSON _width GET "${_json}" charts ${_i} width)
    string(JSON _height GET "${_json}" charts ${_i} height)
    string(JSON _axes GET "${_json}" charts ${_i} axis_labels)
    string(JSON _legend GET "${_json}" charts ${_i} legend)
    list(APPEND _seen "${_id}")
    set(_line "chart ${_id}: ${_visible}/${_expected} data marks visible, ${_width}x${_height} px, ${_axes} axis labels, ${_legend} legend entries")
    message(STATUS "${_line}")
    if(_expected LESS 1 OR _visible LESS _expected OR _width LESS 200 OR _height LESS 100 OR _axes LESS 2 OR _legend LESS 1)
      string(APPEND _problems "\n  ${_line}")
    endif()
  endforeach()
endif()

string(REPLACE "," ";" _want_charts "${EXPECT_CHARTS}")
foreach(_id IN LISTS _want_charts)
  if(NOT _id IN_LIST _seen)
    string(APPEND _problems "\n  chart '${_id}' is missing (charts on the page: ${_seen})")
  endif()
endforeach()
string(REPLACE "," ";" _want_sections "${EXPECT_RECORDED}")
foreach(_id IN LISTS _want_sections)
  string(JSON _state ERROR_VARIABLE _no GET "${_json}" sections ${_id})
  if(NOT _state STREQUAL "yes")
    string(APPEND _problems "\n  section '${_id}' should hold recorded data, but is '${_state}'")
  endif()
endforeach()
if(_problems)
  message(FATAL_ERROR "report browser test (${NAME}) on ${REPORT}:${_problems}")
endif()

# 2. A full-page screenshot of the report as written (no injected script).
string(JSON _page_height GET "${_json}" height)
if(_page_height GREATER 16000)
  set(_page_height 16000)
endif()
file(REMOVE "${SCREENSHOT}")
execute_process(COMMAND ${CHROMIUM} ${_flags} --window-size=1280,${_page_height} --screenshot=${SCREENSHOT} "file://${REPORT}"
                OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc TIMEOUT 120)
if(NOT _rc EQUAL 0 OR NOT EXISTS "${SCREENSHOT}")
  message(FATAL_ERROR "report browser test (${NAME}): chromium --screenshot failed (${_rc}):\n${_err}")
endif()
check_console("${_err}" "${REPORT}")
file(SIZE "${SCREENSHOT}" _png_bytes)
if(_png_bytes LESS 20000)
  message(FATAL_ERROR "report browser test (${NAME}): the screenshot ${SCREENSHOT} has only ${_png_bytes} bytes (blank page?)")
endif()
file(REMOVE_RECURSE "${_profile}")
list(LENGTH _seen _n)
message(STATUS "report browser test (${NAME}): ${_n} charts rendered, no console errors; screenshot ${SCREENSHOT} (1280x${_page_height})")
