#!/usr/bin/env bash
# C and C++ tests of the osft C ABI, against the real library.
#
#   bash tests/c/run.sh
#
# 1. cargo build --release (libosft.so and libosft.a in target/release);
# 2. the header alone compiles as C99, C11 and C++17 with -Wall -Wextra -Werror -pedantic;
# 3. each C test (gcc -std=c99) and C++ test (g++ -std=c++17), and the examples, all with
#    -Wall -Wextra -Werror -pedantic, linked once against libosft.so and once against libosft.a
#    (+ -lpthread -ldl -lm; checked not to need libosft.so), and run;
# 4. the shared builds again under valgrind --leak-check=full --error-exitcode=1 (or, without
#    valgrind, the static builds under AddressSanitizer/LeakSanitizer), plus a negative control
#    that leaks on purpose and must be caught;
# 5. with cmake: `cmake --install --strip` of this tree; the installed library is checked
#    (libosft.so -> libosft.so.<ABI> -> file, SONAME, every osft_* symbol at version OSFT_<ABI>
#    and nothing else exported, at most 10 MB; a "library:" line prints it); a consumer project
#    (tests/c/cmake_consumer) builds the trainer example with find_package(osft CONFIG REQUIRED)
#    and with add_subdirectory(), on osft::osft and osft::osft_static, and runs it; with
#    pkg-config too, the example C program is built from the installed osft.pc (shared) and
#    osft-static.pc (static), and the shared one runs under valgrind with the installed
#    share/osft/valgrind.supp against the stripped library.
#
# Each line says PASS, FAIL or SKIP for one program/configuration; the last line is
# "N passed, M failed, K skipped". The exit status is non-zero when anything failed.
# Environment: OSFT_MEMCHECK=valgrind|asan|none (default: valgrind when installed, else asan),
# OSFT_SKIP_CARGO_BUILD=1 to reuse target/release as it is, CC / CXX to pick compilers.
# Without cmake (or pkg-config) their checks are skipped, each with a SKIP line saying why;
# OSFT_REQUIRE_CMAKE=1 (OSFT_REQUIRE_PKGCONFIG=1) makes that a failure (scripts/test.sh sets both).
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
REL=$ROOT/target/release
OUT=$ROOT/target/c-tests
CC=${CC:-gcc}
CXX=${CXX:-g++}
CWARN=(-std=c99 -Wall -Wextra -Werror -pedantic)
CXXWARN=(-std=c++17 -Wall -Wextra -Werror -pedantic)
INC=(-I"$ROOT/include" -I"$ROOT/bindings/cpp" -I"$ROOT/tests/c")
SHARED_LIBS=(-L"$REL" -losft -Wl,-rpath,"$REL" -lm)
STATIC_LIBS=("$REL/libosft.a" -lpthread -ldl -lm)
export RUST_BACKTRACE=0 # the panic-boundary test panics on purpose: keep its note short

passed=0
failed=0
skipped=0
failures=()
mkdir -p "$OUT"

# step NAME CMD...: run CMD with its output in $OUT/NAME.log; PASS or FAIL.
step() {
    local name=$1
    shift
    if "$@" >"$OUT/$name.log" 2>&1; then
        passed=$((passed + 1))
        printf 'PASS  %s\n' "$name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        printf 'FAIL  %s (log: %s)\n' "$name" "${OUT#$ROOT/}/$name.log"
        tail -n 25 "$OUT/$name.log" | sed 's/^/      | /'
    fi
}

finish() {
    if [ "$failed" -gt 0 ]; then
        printf 'failed: %s\n' "${failures[*]}"
    fi
    printf '%d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
    [ "$failed" -eq 0 ]
    exit $?
}

# --- 1. the library ---------------------------------------------------------------------------
if [ "${OSFT_SKIP_CARGO_BUILD:-0}" != 1 ]; then
    echo "building: cargo build --release"
    if ! cargo build --release >"$OUT/cargo-build.log" 2>&1; then
        tail -n 40 "$OUT/cargo-build.log"
        failed=$((failed + 1))
        failures+=(cargo-build)
        finish
    fi
fi
for f in "$REL/libosft.so" "$REL/libosft.a"; do
    if [ ! -f "$f" ]; then
        echo "missing $f"
        failed=$((failed + 1))
        failures+=("$(basename "$f")")
        finish
    fi
done
# cargo's libosft.so has the SONAME libosft.so.<ABI>, which programs linked against it look for
# at run time; cargo makes no such link, so it is made here (docs/c-and-cpp.md, "Link by hand").
SONAME=$(readelf -d "$REL/libosft.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
if [ -n "$SONAME" ] && [ "$SONAME" != libosft.so ]; then
    ln -sfn libosft.so "$REL/$SONAME"
fi

# --- 2. the header on its own -----------------------------------------------------------------
printf '#include "osft.h"\nint main(void) { return (int)sizeof(osft_matrix) == 72 ? 0 : 1; }\n' >"$OUT/header_only.c"
cp "$OUT/header_only.c" "$OUT/header_only.cpp"
step header-c99 "$CC" "${CWARN[@]}" -I"$ROOT/include" -c "$OUT/header_only.c" -o "$OUT/header_c99.o"
step header-c11 "$CC" -std=c11 -Wall -Wextra -Werror -pedantic -I"$ROOT/include" -c "$OUT/header_only.c" -o "$OUT/header_c11.o"
step header-c++17 "$CXX" "${CXXWARN[@]}" -I"$ROOT/include" -c "$OUT/header_only.cpp" -o "$OUT/header_cpp.o"
step osft.hpp-c++17 "$CXX" "${CXXWARN[@]}" -I"$ROOT/include" -I"$ROOT/bindings/cpp" -x c++ -c - -o "$OUT/hpp.o" \
    <<<'#include "osft.hpp"
int main() { return osft::version().abi == OSFT_ABI_VERSION ? 0 : 1; }'

# --- 3. tests and examples, shared and static -------------------------------------------------
# name:language:source:expected-exit
PROGRAMS=(
    "test_numeric:c:tests/c/test_numeric.c"
    "test_errors:c:tests/c/test_errors.c"
    "test_cpp:c++:tests/c/test_cpp.cpp"
    "example_c:c:examples/c/decompose_project.c"
    "example_trainer:c++:examples/cpp/trainer.cpp"
)

compile() { # lang src out libs...
    local lang=$1 src=$2 out=$3
    shift 3
    if [ "$lang" = c ]; then
        "$CC" "${CWARN[@]}" -O1 "${INC[@]}" "$ROOT/$src" -o "$out" "$@"
    else
        "$CXX" "${CXXWARN[@]}" -O1 "${INC[@]}" "$ROOT/$src" -o "$out" "$@"
    fi
}

build_and_run() { # lang src out link-kind
    local lang=$1 src=$2 out=$3 kind=$4
    if [ "$kind" = shared ]; then
        compile "$lang" "$src" "$out" "${SHARED_LIBS[@]}" || return 1
    else
        compile "$lang" "$src" "$out" "${STATIC_LIBS[@]}" || return 1
        if ldd "$out" | grep -q libosft; then
            echo "$out is linked statically but needs libosft.so:"
            ldd "$out"
            return 1
        fi
    fi
    "$out"
}

for p in "${PROGRAMS[@]}"; do
    IFS=: read -r name lang src <<<"$p"
    for kind in shared static; do
        step "$name-$kind" build_and_run "$lang" "$src" "$OUT/$name-$kind" "$kind"
    done
done

# --- 4. memory checking -----------------------------------------------------------------------
MEMCHECK=${OSFT_MEMCHECK:-}
if [ -z "$MEMCHECK" ]; then
    if command -v valgrind >/dev/null 2>&1; then MEMCHECK=valgrind; else MEMCHECK=asan; fi
fi
VALGRIND=(valgrind --leak-check=full --error-exitcode=1 --errors-for-leak-kinds=definite,indirect,possible
    --suppressions="$ROOT/tests/c/valgrind.supp" --quiet)

# The control must be caught: a checker that passes it would pass real leaks too.
expect_caught() {
    if "$@"; then
        echo "the memory checker did NOT report the deliberate leak"
        return 1
    fi
    echo "the memory checker reported the deliberate leak, as it must"
}

leak_control_valgrind() {
    compile c tests/c/leak_control.c "$OUT/leak_control" "${SHARED_LIBS[@]}" || return 1
    expect_caught "${VALGRIND[@]}" "$OUT/leak_control"
}

ASAN=(-fsanitize=address -fno-omit-frame-pointer -g)
asan_build_and_run() { # lang src out
    compile "$1" "$2" "$3" "${ASAN[@]}" "${STATIC_LIBS[@]}" || return 1
    ASAN_OPTIONS=detect_leaks=1 "$3"
}

leak_control_asan() {
    compile c tests/c/leak_control.c "$OUT/leak_control_asan" "${ASAN[@]}" "${STATIC_LIBS[@]}" || return 1
    expect_caught env ASAN_OPTIONS=detect_leaks=1 "$OUT/leak_control_asan"
}

case "$MEMCHECK" in
valgrind)
    for p in "${PROGRAMS[@]}"; do
        IFS=: read -r name lang src <<<"$p"
        step "$name-valgrind" "${VALGRIND[@]}" "$OUT/$name-shared"
    done
    step leak-control-valgrind leak_control_valgrind
    ;;
asan)
    for p in "${PROGRAMS[@]}"; do
        IFS=: read -r name lang src <<<"$p"
        step "$name-asan" asan_build_and_run "$lang" "$src" "$OUT/$name-asan"
    done
    step leak-control-asan leak_control_asan
    ;;
none)
    skipped=$((skipped + ${#PROGRAMS[@]} + 1))
    echo "SKIP  memory checking of $((${#PROGRAMS[@]} + 1)) programs: not run (OSFT_MEMCHECK=none)"
    ;;
*)
    echo "unknown OSFT_MEMCHECK=$MEMCHECK"
    failed=$((failed + 1))
    failures+=(memcheck)
    ;;
esac

# --- 5. CMake package and pkg-config ---------------------------------------------------------
# not_run NAME WHY SWITCH: a check that cannot run here: a skip, or a failure when $SWITCH=1.
not_run() {
    if [ "${!3:-0}" = 1 ]; then
        failed=$((failed + 1))
        failures+=("$1")
        printf 'FAIL  %s: %s, and %s=1 requires it\n' "$1" "$2" "$3"
    else
        skipped=$((skipped + 1))
        printf 'SKIP  %s: not run: %s (%s=1 makes this a failure)\n' "$1" "$2" "$3"
    fi
}

cmake_install() {
    rm -rf "$OUT/cmake-build" "$OUT/cmake-install"
    cmake -S "$ROOT" -B "$OUT/cmake-build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$OUT/cmake-install" &&
        cmake --build "$OUT/cmake-build" && cmake --install "$OUT/cmake-build" --strip
}

MAX_LIB_BYTES=$((10 * 1024 * 1024))
# installed_library: the installed shared library's links, SONAME, exported symbols and size.
installed_library() {
    local lib=$OUT/cmake-install/lib abi file soname bytes nsym
    abi=$(sed -n 's/^#define OSFT_ABI_VERSION \([0-9]*\).*/\1/p' "$OUT/cmake-install/include/osft.h")
    [ -n "$abi" ] || { echo "no OSFT_ABI_VERSION in the installed osft.h"; return 1; }
    [ "$(readlink "$lib/libosft.so")" = "libosft.so.$abi" ] || { echo "libosft.so does not link to libosft.so.$abi"; ls -l "$lib"; return 1; }
    file=$(readlink "$lib/libosft.so.$abi")
    [ -n "$file" ] && [ -f "$lib/$file" ] && [ ! -L "$lib/$file" ] || { echo "libosft.so.$abi is not a link to a file"; ls -l "$lib"; return 1; }
    readelf -d "$lib/$file" | grep SONAME
    soname=$(readelf -d "$lib/$file" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
    [ "$soname" = "libosft.so.$abi" ] || { echo "SONAME '$soname', want libosft.so.$abi"; return 1; }
    # Every defined dynamic symbol is an osft_* function at OSFT_<abi> (plus the version's own
    # symbol); the same functions as cargo's libosft.so exports.
    objdump -T "$lib/$file" | awk '$2 ~ /g/ && $4 != "*UND*"' >"$OUT/installed-dynsyms.txt"
    if awk -v v="OSFT_$abi" '!($NF ~ /^osft_/ && $(NF-1) == v) && !($NF == v)' "$OUT/installed-dynsyms.txt" | grep .; then
        echo "exported symbols above are not osft_* at version OSFT_$abi"
        return 1
    fi
    nsym=$(grep -c ' osft_' "$OUT/installed-dynsyms.txt")
    [ "$nsym" -eq "$(nm -D --defined-only "$REL/libosft.so" | grep -c ' osft_')" ] || { echo "$nsym osft_* symbols, cargo's library has another count"; return 1; }
    readelf -S "$lib/$file" | grep -q '\.symtab' && { echo "not stripped by cmake --install --strip"; return 1; }
    [ -f "$OUT/cmake-install/share/osft/valgrind.supp" ] || { echo "share/osft/valgrind.supp not installed"; return 1; }
    bytes=$(stat -c %s "$lib/$file")
    echo "library: lib/$file $((bytes / 1024)) KiB ($bytes bytes, limit $MAX_LIB_BYTES), SONAME $soname, $nsym symbols at OSFT_$abi, stripped"
    [ "$bytes" -le "$MAX_LIB_BYTES" ] || { echo "larger than $MAX_LIB_BYTES bytes"; return 1; }
}

# consumer DIR ARGS...: configure and build tests/c/cmake_consumer, run both trainers; the static
# one must not need libosft.so.
cmake_consumer() {
    local dir=$1
    shift
    rm -rf "$dir"
    cmake -S "$ROOT/tests/c/cmake_consumer" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" &&
        cmake --build "$dir" &&
        "$dir/trainer_shared" && "$dir/trainer_static" &&
        if ldd "$dir/trainer_static" | grep -q libosft; then echo "trainer_static needs libosft.so"; false; fi
}

pkg_config_consumer() {
    local pc=$OUT/cmake-install/lib/pkgconfig
    echo "pkg-config --libs osft: $(PKG_CONFIG_PATH=$pc pkg-config --libs osft)"
    echo "pkg-config --static --libs osft-static: $(PKG_CONFIG_PATH=$pc pkg-config --static --libs osft-static)"
    # shellcheck disable=SC2046
    "$CC" "${CWARN[@]}" "$ROOT/examples/c/decompose_project.c" -o "$OUT/pkgconfig-shared" \
        $(PKG_CONFIG_PATH=$pc pkg-config --cflags --libs osft) -Wl,-rpath,"$OUT/cmake-install/lib" -lm &&
        "$OUT/pkgconfig-shared" &&
        "$CC" "${CWARN[@]}" "$ROOT/examples/c/decompose_project.c" -o "$OUT/pkgconfig-static" \
            $(PKG_CONFIG_PATH=$pc pkg-config --cflags --static --libs osft-static) &&
        "$OUT/pkgconfig-static" &&
        if ldd "$OUT/pkgconfig-static" | grep -q libosft; then echo "pkgconfig-static needs libosft.so"; false; fi
}

# A user's program under valgrind with the installed suppressions and the stripped library.
installed_supp_valgrind() {
    valgrind --leak-check=full --error-exitcode=1 --errors-for-leak-kinds=definite,indirect,possible \
        --suppressions="$OUT/cmake-install/share/osft/valgrind.supp" --quiet "$OUT/pkgconfig-shared"
}

if command -v cmake >/dev/null 2>&1; then
    step cmake-install cmake_install
    step cmake-installed-library installed_library
    grep -E '^(library:|.*SONAME)' "$OUT/cmake-installed-library.log" | sed 's/^/      /'
    step cmake-find_package cmake_consumer "$OUT/cmake-consumer" -DCMAKE_PREFIX_PATH="$OUT/cmake-install"
    step cmake-add_subdirectory cmake_consumer "$OUT/cmake-subdir" -DOSFT_SOURCE_DIR="$ROOT"
    if command -v pkg-config >/dev/null 2>&1; then
        step pkg-config pkg_config_consumer
        if [ "$MEMCHECK" = valgrind ]; then
            step pkg-config-valgrind-installed-supp installed_supp_valgrind
        fi
    else
        not_run pkg-config "pkg-config is not installed" OSFT_REQUIRE_PKGCONFIG
    fi
else
    for c in cmake-install cmake-find_package cmake-add_subdirectory; do
        not_run "$c" "cmake is not installed" OSFT_REQUIRE_CMAKE
    done
    not_run pkg-config "needs the CMake install of osft.pc, and cmake is not installed" OSFT_REQUIRE_CMAKE
fi

finish
