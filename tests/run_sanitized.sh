#!/usr/bin/env bash
# Builds the CPU library with AddressSanitizer + UndefinedBehaviorSanitizer, out of tree with plain CMake, and runs
# the CPU tests against it:
#
#     bash tests/run_sanitized.sh                  # build (incremental) + the default test selection below
#     bash tests/run_sanitized.sh tests/ops/test_conv2d_act.py -k relu     # other pytest arguments instead
#
# How: `cmake -DCNNKERNELS_SANITIZE=address,undefined` into build/asan (the package's own cnnkernels/lib is left
# alone); the tests import the source tree's Python package (python -m pytest from the repository root) with
# CNNKERNELS_LIBRARY_DIR pointing the loader at build/asan/cnnkernels, and the ASan runtime preloaded (Python itself is
# not instrumented). A sanitizer report fails the run: UBSan halts on the first error, ASan always does.
# detect_leaks=0 because CPython and torch keep allocations until exit by design.
#
# Environment:
#   BUILD_DIR   build folder (default <repo>/build/asan)
#   SANITIZE    sanitizers (default address,undefined)
#   PYTHON      interpreter whose torch the library is built against (default: python3)
#   MAX_JOBS    parallel compile jobs (default: all cores)
#   SKIP_BUILD=1  reuse the existing build
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build/asan}
SANITIZE=${SANITIZE:-address,undefined}
PY=$(command -v "${PYTHON:-python3}")
JOBS=${MAX_JOBS:-$(nproc)}
t0=$(date +%s)

if [ "${SKIP_BUILD:-0}" != "1" ]; then
  gen=()
  if command -v ninja >/dev/null && [ ! -f "$BUILD/Makefile" ]; then gen=(-GNinja); fi
  cmake -S "$ROOT" -B "$BUILD" "${gen[@]}" -DCNNKERNELS_CUDA=OFF -DCNNKERNELS_SANITIZE="$SANITIZE" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPython3_EXECUTABLE="$PY" >/dev/null
  cmake --build "$BUILD" --parallel "$JOBS"
fi
t1=$(date +%s)
LIBDIR=$BUILD/cnnkernels
[ -f "$LIBDIR/libcnnkernels_cpu.so" ] || { echo "no $LIBDIR/libcnnkernels_cpu.so" >&2; exit 1; }

# The sanitizer runtimes of the compiler that built the library (ASan must be the first library loaded).
CXX=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
preload=()
case ",$SANITIZE," in *,address,*) preload+=("$("${CXX:-c++}" -print-file-name=libasan.so)");; esac
case ",$SANITIZE," in *,undefined,*) preload+=("$("${CXX:-c++}" -print-file-name=libubsan.so)");; esac
for lib in "${preload[@]}"; do
  [ -f "$lib" ] || { echo "sanitizer runtime not found: $lib" >&2; exit 1; }
done

export CNNKERNELS_LIBRARY_DIR=$LIBDIR
export CNNKERNELS_EXPECT_COMPILED=1
export LD_PRELOAD="${preload[*]}${LD_PRELOAD:+ $LD_PRELOAD}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=0:protect_shadow_gap=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

cd "$ROOT"
# The library really is the sanitized one, and it works.
"$PY" - <<'EOF'
import torch, cnnkernels
from cnnkernels import _library as L
assert L.STATE.cpu, L.STATE.reason
assert L.CPU_LIB.parent == __import__("pathlib").Path(__import__("os").environ["CNNKERNELS_LIBRARY_DIR"]).resolve()
assert L.STATE.build_config["sanitize"], L.STATE.build_config
maps = open("/proc/self/maps").read()
assert "libasan" in maps or "address" not in L.STATE.build_config["sanitize"], "the ASan runtime is not loaded"
x = torch.randn(2, 3, 4, 5)
assert torch.equal(cnnkernels.add_relu(x, x), torch.relu(2 * x))
print(f"sanitized library: {L.CPU_LIB} ({L.STATE.build_config['sanitize']}), kernels {L.cpu_isa()}")
EOF

rc=0
if [ "$#" -eq 0 ]; then
  # The CPU op tests (correctness, gradcheck, opcheck, bad inputs), the fuzz slice, the bad-input catalogue (without
  # the >2**31-element tests, which need more memory than ASan's shadow and quarantine leave) and the thread tests on
  # the best kernels for this CPU; then the correctness tests again on the generic (DEFAULT) kernels.
  files=(tests/ops/test_add_relu.py tests/ops/test_conv2d_act.py tests/ops/test_dwsep_conv2d.py
         tests/ops/test_inverted_residual.py tests/ops/test_inception_block.py
         tests/reliability/test_fuzz_ops.py tests/reliability/test_bad_input_catalogue.py
         tests/reliability/test_threads.py
         tests/packaging/test_library.py)
  "$PY" -m pytest -q -p no:cacheprovider "${files[@]}" -m "not slow and not fuzz" || rc=$?
  echo "run_sanitized: again on the generic kernels (CNNKERNELS_CPU_ISA=default)"
  CNNKERNELS_CPU_ISA=default "$PY" -m pytest -q -p no:cacheprovider "${files[@]}" -m "correctness" || rc=$?
else
  "$PY" -m pytest -q -p no:cacheprovider "$@" || rc=$?
fi
t2=$(date +%s)
echo "run_sanitized: build $((t1 - t0)) s, tests $((t2 - t1)) s, exit $rc ($SANITIZE, $LIBDIR)"
exit "$rc"
