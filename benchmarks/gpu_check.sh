#!/usr/bin/env bash
# The OpenCL backend on a GPU, in one command: install microconv and pyopencl into a fresh
# virtualenv (from a folder of wheels where there is no internet), make the GPU driver's
# OpenCL library visible when no .icd file registers it, then print the device, the summary of
# the OpenCL property tests (tests/test_opencl.py) and the throughput of
# `microconv bench -b numpy -b opencl`. See docs/opencl.md, "A GPU run".
#
#   benchmarks/gpu_check.sh download [DIR]    # where there is internet: fill DIR with wheels
#   benchmarks/gpu_check.sh [options]         # on the GPU machine
#
# Options:
#   --wheels DIR        install offline from DIR (default: benchmarks/wheels if it exists)
#   --device SPEC       the OpenCL device, as for --device (default: the first GPU)
#   --library PATH      register this OpenCL driver library (an ICD) before looking for one
#   --allow-cpu         go on when no GPU is found (tries the script against PoCL)
#   --runs N            timed runs per bench measurement (default 5)
#   --out DIR           where the logs go (default /tmp/microconv-gpu-check)
# Exit codes: 0 all passed, 1 a test or the bench failed, 2 no usable device or set-up.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHONS="${MICROCONV_WHEEL_PYTHONS:-3.10 3.11 3.12 3.13}"   # `download` fetches wheels for these

say() { printf '\n== %s\n' "$*"; }
die() { printf 'gpu_check: %s\n' "$*" >&2; exit 2; }

# --- download: the wheels an offline machine needs ---------------------------------------------
if [ "${1:-}" = download ]; then
    dest="${2:-$ROOT/benchmarks/wheels}"
    mkdir -p "$dest"
    # The project's own requirements (pyproject.toml), the opencl extra, the test runner, and
    # what builds the project; for each Python version and for manylinux x86_64.
    mapfile -t reqs < <(python3 - "$ROOT/pyproject.toml" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
wanted = ("pytest", "hypothesis")
dev = [r for r in project["optional-dependencies"]["dev"] if r.split(">")[0] in wanted]
build = tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["opencl"] + dev
                + build + ["wheel"]))
PY
    ) || die "cannot read the requirements from pyproject.toml (needs Python 3.11+)"
    for version in $PYTHONS; do
        python3 -m pip download --quiet --dest "$dest" --only-binary=:all: \
            --platform manylinux_2_28_x86_64 --python-version "$version" "${reqs[@]}" \
            || die "pip download failed for Python $version"
    done
    echo "wheels for Python $PYTHONS in $dest ($(ls "$dest" | wc -l) files); copy that folder"
    echo "to the GPU machine and run: benchmarks/gpu_check.sh --wheels $dest"
    exit 0
fi

wheels=""; device=""; library=""; allow_cpu=0; runs=5; out=/tmp/microconv-gpu-check
[ -d "$ROOT/benchmarks/wheels" ] && wheels="$ROOT/benchmarks/wheels"
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --library) library="$2"; shift 2 ;;
        --allow-cpu) allow_cpu=1; shift ;;
        --runs) runs="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) die "unknown option $1 (see the top of $0)" ;;
    esac
done
mkdir -p "$out" || die "cannot create $out"

# --- a virtualenv with microconv and pyopencl ----------------------------------------------------
# --system-site-packages: what the machine has (NumPy from a PyTorch install) is used as is.
venv="$out/venv"
say "installing microconv and pyopencl into $venv"
python3 -m venv --system-site-packages "$venv" \
    || die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ -n "$wheels" ]; then
    [ -d "$wheels" ] || die "no wheel folder at $wheels (make one with: $0 download DIR)"
    pip+=(--no-index --find-links "$wheels")
fi
"${pip[@]}" "setuptools>=68" wheel >"$out/pip.log" 2>&1 \
    && "${pip[@]}" --no-build-isolation -e "$ROOT[opencl]" pytest hypothesis >>"$out/pip.log" 2>&1 \
    || { tail -5 "$out/pip.log" >&2
         die "installing failed (log: $out/pip.log); offline, give --wheels with wheels for" \
             "Python $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')"; }
py="$venv/bin/python"

# --- an OpenCL GPU, registering the driver's library where no .icd file does ----------------------
probe() {   # prints "GPU|CPU|OTHER <name> (<platform>)" per device; nothing when there is none
    "$py" - <<'PY' 2>/dev/null
import pyopencl as cl
try:
    platforms = cl.get_platforms()
except cl.Error:
    platforms = []
for platform in platforms:
    try:
        devices = platform.get_devices()
    except cl.Error:
        devices = []
    for d in devices:
        kind = "GPU" if d.type & cl.device_type.GPU else "CPU" if d.type & cl.device_type.CPU else "OTHER"
        print(kind, d.name.strip(), f"({platform.name.strip()}, driver {d.driver_version.strip()})")
PY
}

icd_dir="$out/vendors"
system_icds="${OCL_ICD_VENDORS:-/etc/OpenCL/vendors}"     # where the ICD loader looks
register() {    # every .icd file the loader would read, plus one per library given
    mkdir -p "$icd_dir"
    cp "$system_icds"/*.icd "$icd_dir"/ 2>/dev/null
    for lib in "$@"; do
        echo "$lib" > "$icd_dir/$(basename "$lib" | cut -d. -f1).icd"
        echo "registered $lib"
    done
    export OCL_ICD_VENDORS="$icd_dir"
}

driver_libraries() {    # the GPU vendors' OpenCL libraries found in the usual folders
    local dirs=(/usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /usr/local/nvidia/lib64
                /usr/local/nvidia/lib /usr/local/cuda/lib64 /opt/rocm/lib
                /usr/lib/x86_64-linux-gnu/intel-opencl)
    IFS=: read -r -a extra <<< "${LD_LIBRARY_PATH:-}"
    {
        for dir in "${dirs[@]}" "${extra[@]}"; do
            [ -d "$dir" ] && ls -1 "$dir"/libnvidia-opencl.so* "$dir"/libamdocl64.so* \
                "$dir"/libigdrcl.so* 2>/dev/null
        done
        ldconfig -p 2>/dev/null | grep -oE '/[^ ]*(libnvidia-opencl|libamdocl64|libigdrcl)\.so[^ ]*'
    } | while read -r lib; do readlink -f "$lib"; done | sort -u
}

say "OpenCL devices"
[ -n "$library" ] && register "$library"
devices="$(probe)"
if ! grep -q '^GPU' <<< "$devices"; then
    mapfile -t found < <(driver_libraries)
    if [ ${#found[@]} -gt 0 ]; then
        echo "no GPU visible; registering the driver libraries found:"
        register "${found[@]}"
        devices="$(probe)"
    fi
fi
echo "${devices:-(none)}"
if ! grep -q '^GPU' <<< "$devices"; then
    msg="no OpenCL GPU found (searched /etc/OpenCL/vendors, the usual driver folders and"
    msg+=" ldconfig for libnvidia-opencl, libamdocl64, libigdrcl; give --library PATH if the"
    msg+=" driver's OpenCL library lies elsewhere; in a container the GPU and its driver"
    msg+=" libraries must be passed in, e.g. NVIDIA_DRIVER_CAPABILITIES=compute,utility)"
    [ "$allow_cpu" = 1 ] && [ -n "$devices" ] || die "$msg"
    echo "gpu_check: $msg; going on with the device there is (--allow-cpu)"
fi
[ -n "$device" ] && export MICROCONV_OPENCL_DEVICE="$device"
"$venv/bin/microconv" backends | tee "$out/backends.txt"

# --- the OpenCL property tests -----------------------------------------------------------------
say "OpenCL property tests (tests/test_opencl.py)"
status=0
(cd "$ROOT" && MICROCONV_REQUIRE_OPENCL=1 "$py" -m pytest -o addopts= -q -p no:cacheprovider \
    tests/test_opencl.py) > "$out/tests.txt" 2>&1 || status=1
grep -E "passed|failed|error|FAILED" "$out/tests.txt" | tail -15

# --- training and inference throughput ---------------------------------------------------------
say "microconv bench -b numpy -b opencl --runs $runs"
if "$venv/bin/microconv" bench -b numpy -b opencl --runs "$runs" --json > "$out/bench.json" \
        2> "$out/bench.err"; then
    "$py" - "$out/bench.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
machine = report["machine"]
print(f"{machine['cpu']}, {machine['cores']} cores, load {machine['load_average_1m']}; "
      f"training batch {report['batch_size']}, inference batch {report['infer_batch_size']}, "
      f"median of {report['runs']} runs")
rows = report["backends"]
for name, row in rows.items():
    print(f"{name:7} train {row['train_images_per_s']:10,.0f} img/s   "
          f"infer {row['infer_images_per_s']:10,.0f} img/s   {row['device']}")
if "numpy" in rows and "opencl" in rows:
    ratio = {k: rows["opencl"][k] / rows["numpy"][k]
             for k in ("train_images_per_s", "infer_images_per_s")}
    print(f"opencl / numpy: training {ratio['train_images_per_s']:.2f}x, "
          f"inference {ratio['infer_images_per_s']:.2f}x")
for name, reason in report.get("skipped", {}).items():
    print(f"{name} skipped: {reason}")
PY
else
    tail -5 "$out/bench.err"
    status=1
fi
say "logs in $out (backends.txt, tests.txt, bench.json)"
exit $status
