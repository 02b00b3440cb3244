#!/usr/bin/env bash
# The GPU check: what posttrain does on a CUDA GPU, in one run (docs/scaling.md, "GPU check").
#
#   bash bench/gpu/check.sh             on a GPU machine. If .whl/ is there (`make gpu-wheels`, carried
#                                       to the lent machine), its wheels are installed into a temporary
#                                       folder first; without it, the packages installed for python3 are used.
#   bash bench/gpu/check.sh --dry-run   here, on CPU: installs nothing, checks .whl/ against
#                                       bench/gpu/wheels.txt, runs the same steps with .venv/bin/python
#                                       and CUDA hidden, so that the GPU ones SKIP.
#   options: --no-wheels (leave .whl/ out: neither checked nor installed), --only STEP[,STEP...]
#   environment: PYTHON (default python3; .venv/bin/python with --dry-run), OUT (default
#   bench/results/gpu; runs/gpu_check_dry with --dry-run), WHL_DIR (default .whl), T_<STEP> (a step's limit in seconds, e.g. T_STEP=200),
#   GPU_CHECK_BUDGET (the whole run's, 460)
#
# Steps, each under its own limit (`timeout`), each closing with a line `PASS|FAIL|SKIP <step> ...`:
#   wheels     .whl/ holds one wheel for each pin of wheels.txt and nothing else, under 64 MiB
#   install    the wheels into a temporary folder (--dry-run: pip checks they fit CPython 3.12 x86-64)
#   versions   python, torch, CUDA, the GPU, transformers, trl, ... and where each was loaded from
#   deps       each runtime requirement of posttrain[deepspeed,serve], recursively, is there in a version that fits
#   imports    posttrain and what it imports lazily (deepspeed, fastapi, reasoning_gym, ...) import
#   gpu-tests  python -m pytest -m gpu -q tests/
#   step       python bench/gpu/step.py --out $OUT/step.json (its last line: gpu=... mfu_update=... ...)
# Everything measured goes to $OUT/gpu_check.json, the whole output to $OUT/gpu_check.log.
# Exit status: 0 when no step FAILED. The whole run stops at 460 s (GPU_CHECK_BUDGET): under 8 minutes.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2

DRY=0
NO_WHEELS=0
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --no-wheels) NO_WHEELS=1 ;;
        --only) ONLY=${2:-}; shift ;;
        --only=*) ONLY=${1#--only=} ;;
        -h | --help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

STEPS="wheels install versions deps imports gpu-tests step"
for s in ${ONLY//,/ }; do
    case " $STEPS " in *" $s "*) ;; *) echo "check.sh: no step '$s' (steps: $STEPS)" >&2; exit 2 ;; esac
done

LIST=bench/gpu/wheels.txt
WHL_DIR=${WHL_DIR:-.whl}
LIMIT_MIB=64
if [ "$DRY" = 1 ]; then DEFAULT_OUT=$ROOT/runs/gpu_check_dry; else DEFAULT_OUT=$ROOT/bench/results/gpu; fi
OUT=${OUT:-$DEFAULT_OUT}  # a dry run's outputs go under runs/ (ignored), a real run's to bench/results/gpu
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT
export GPU_CHECK_WORK=$WORK GPU_CHECK_OUT=$OUT GPU_CHECK_LIST=$LIST GPU_CHECK_WHL=$WHL_DIR
export GPU_CHECK_LIMIT_MIB=$LIMIT_MIB PYTHONUNBUFFERED=1

if [ "$DRY" = 1 ]; then
    MODE=dry-run
    PY=${PYTHON:-.venv/bin/python}
    export CUDA_VISIBLE_DEVICES=""  # CUDA absent, even on a machine that has it
elif [ "$NO_WHEELS" = 0 ] && [ -d "$WHL_DIR" ]; then
    MODE=device
    PY=${PYTHON:-python3}
else
    MODE=installed
    PY=${PYTHON:-python3}
fi
export GPU_CHECK_MODE=$MODE
# The project itself travels as the working tree: on the path, whether installed or not.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

exec > >(tee "$OUT/gpu_check.log") 2>&1
TEE_PID=$!
# finish STATUS: lets tee write the last lines before the script returns.
finish() {
    exec >&- 2>&-
    wait "$TEE_PID" 2>/dev/null
    exit "$1"
}

# Limits in seconds (T_<STEP> overrides one). Each step also stops when the whole run reaches
# BUDGET (GPU_CHECK_BUDGET, 460 s): the run ends inside 8 minutes, and a step that runs long is
# given what the quick ones left (typically the first five take under a minute together).
T_WHEELS=${T_WHEELS:-15}
T_INSTALL=${T_INSTALL:-45}
T_VERSIONS=${T_VERSIONS:-30}
T_DEPS=${T_DEPS:-15}
T_IMPORTS=${T_IMPORTS:-45}
T_GPU_TESTS=${T_GPU_TESTS:-180}
T_STEP=${T_STEP:-200}
BUDGET=${GPU_CHECK_BUDGET:-460}
T_START=$(date +%s)

# ---------------------------------------------------------------------------------------------
# The Python side (Python >= 3.11, standard library; `deps` also uses packaging).
cat >"$WORK/helper.py" <<'PYEOF'
import json, os, re, sys, time
from pathlib import Path

WORK = Path(os.environ["GPU_CHECK_WORK"])
MIB = 1024 * 1024


def result(status, detail, data=None, name=None):
    if data is not None:
        (WORK / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))
    print(f"RESULT {status} {detail}")


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def read_list(path):
    """Pins of wheels.txt: {name: (version, kind)}, kinds download / build / build-cp312."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+)\s*#\s*(download|build|build-cp312):", line)
        if m:
            pins[norm(m.group(1))] = (m.group(2), m.group(3))
    return pins


def wheels():
    lst, d, limit = os.environ["GPU_CHECK_LIST"], Path(os.environ["GPU_CHECK_WHL"]), int(os.environ["GPU_CHECK_LIMIT_MIB"])
    pins = read_list(lst)
    found, problems = {}, []
    files = sorted(p for p in d.iterdir() if not p.name.startswith("."))
    for p in files:
        m = re.match(r"^([^-]+)-([^-]+)-.*\.whl$", p.name)
        if not m:
            problems.append(f"not a wheel: {p.name}")
            continue
        found.setdefault(norm(m.group(1)), []).append((m.group(2), p))
    for name, got in sorted(found.items()):
        if len(got) > 1:
            problems.append(f"two versions of {name}: {', '.join(v for v, _ in got)}")
        if name not in pins:
            problems.append(f"extra: {got[0][1].name} (not in {lst})")
        elif got[0][0] != pins[name][0] and len(got) == 1:
            problems.append(f"{name} {got[0][0]} but {lst} pins {pins[name][0]}")
    missing = sorted(n for n in pins if n not in found)
    problems += [f"missing: {n}=={pins[n][0]}" for n in missing]
    size = sum(p.stat().st_size for p in files)
    mib = size / MIB
    print(f"wheels: {len(files)} files, {mib:.1f} MiB in {d}/ (limit {limit} MiB), {len(pins)} pins in {lst}")
    if mib >= limit:
        problems.append(f"{mib:.1f} MiB: over the {limit} MiB a device call carries")
    for p in problems:
        print(f"  {p}")
    data = {"dir": str(d), "count": len(files), "mib": round(mib, 2), "problems": problems,
            "files": {p.name: p.stat().st_size for p in files}}
    if problems:
        return result("FAIL", f"{len(problems)} problem(s) (`make gpu-wheels` remakes the folder): {'; '.join(problems[:3])}",
                      data, "wheels")
    result("PASS", f"{len(files)} wheels, {mib:.1f} MiB (< {limit} MiB), one for each pin of {lst}", data, "wheels")


def where(dist):
    site = os.environ.get("GPU_CHECK_SITE")
    try:
        loc = str(dist.locate_file(""))
    except Exception:
        return "?"
    return "carried" if site and loc.startswith(site) else "installed"


def versions():
    import importlib.metadata as md
    import platform
    import shutil
    import subprocess

    v = {"python": platform.python_version(), "python_executable": sys.executable, "host": platform.node()}
    status = "PASS"
    try:
        import torch

        v["torch"] = torch.__version__
        v["cuda"] = torch.version.cuda
        v["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            v["gpu"] = torch.cuda.get_device_name(0)
            v["gpu_count"] = torch.cuda.device_count()
            v["gpu_mem_gib"] = round(props.total_memory / 1024**3, 1)
            v["capability"] = f"sm_{props.major}{props.minor}"
            v["bf16"] = torch.cuda.is_bf16_supported()
            v["cudnn"] = torch.backends.cudnn.version()
        else:
            v["gpu"] = "none"
    except Exception as exc:  # noqa: BLE001
        v["torch"] = f"not importable: {exc}"
        status = "FAIL"
    if os.environ["GPU_CHECK_MODE"] != "dry-run" and not v.get("cuda_available"):
        status = "FAIL"  # a GPU run on which torch sees no GPU measures nothing
    if shutil.which("nvidia-smi") and v.get("cuda_available"):
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            v["nvidia_smi"] = q.stdout.strip()
        except Exception as exc:  # noqa: BLE001
            v["nvidia_smi"] = f"failed: {exc}"
    pkgs = {}
    for name in ["transformers", "trl", "accelerate", "peft", "datasets", "deepspeed", "huggingface-hub", "tokenizers",
                 "safetensors", "numpy", "pyarrow", "pandas", "triton", "vllm"]:
        try:
            d = md.distribution(name)
            pkgs[name] = {"version": d.version, "from": where(d)}
        except md.PackageNotFoundError:
            pkgs[name] = {"version": None, "from": None}
    v["packages"] = pkgs
    print(f"python {v['python']} ({sys.executable})")
    extra = f" ({v['gpu_mem_gib']} GiB, {v['capability']}, driver: {v.get('nvidia_smi', '?')})" if v.get("cuda_available") else ""
    print(f"torch {v.get('torch')}  cuda {v.get('cuda')}  gpu {v.get('gpu')}{extra}")
    print("  ".join(f"{k} {p['version']} ({p['from']})" for k, p in pkgs.items() if p["version"]))
    t = pkgs["transformers"]["version"]
    r = pkgs["trl"]["version"]
    result(status, f"torch={v.get('torch')} cuda={v.get('cuda')} gpu={v.get('gpu')} transformers={t} trl={r}", v, "versions")


def deps():
    import importlib.metadata as md
    import tomllib

    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError as exc:
        return result("FAIL", f"packaging is not importable ({exc}): cannot check", {}, "deps")
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    top = list(project["dependencies"])
    for extra in ("deepspeed", "serve"):
        top += project["optional-dependencies"][extra]
    queue = [(Requirement(r), "posttrain") for r in top]
    seen, checked, problems = set(), {}, []
    while queue:
        req, parent = queue.pop(0)
        key = (norm(req.name), str(req.specifier), frozenset(req.extras), parent)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            problems.append(f"missing {req.name} (needed by {parent}: {req})")
            continue
        ok = req.specifier.contains(Version(dist.version), prereleases=True)
        if not ok:
            problems.append(f"{req.name} {dist.version} ({where(dist)}) does not satisfy {req} (needed by {parent})")
        entry = checked.setdefault(norm(req.name), {"version": dist.version, "from": where(dist), "needed_by": []})
        entry["needed_by"].append(f"{parent}: {req}")
        extras = set(req.extras) | {""}
        for r in dist.requires or []:
            sub = Requirement(r)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                queue.append((sub, f"{norm(req.name)} {dist.version}"))
    carried = sum(1 for e in checked.values() if e["from"] == "carried")
    print(f"deps: {len(checked)} distributions checked ({carried} carried), {len(problems)} problem(s)")
    for p in problems:
        print(f"  {p}")
    data = {"checked": checked, "problems": problems}
    if problems:
        return result("FAIL", f"{len(problems)} unmet: {'; '.join(problems[:3])}", data, "deps")
    result("PASS", f"all {len(checked)} requirements met", data, "deps")


MODULES = ["torch", "transformers", "trl", "accelerate", "peft", "datasets", "posttrain", "posttrain.cli",
           "posttrain.train", "posttrain.trainer", "rewards.math", "math_verify", "reasoning_gym", "gguf", "bm25s",
           "deepspeed", "fastapi", "uvicorn", "posttrain.rollout.server", "posttrain.retrieval.server",
           "matplotlib", "tensorboard"]


def imports():
    import importlib

    times, failed = {}, {}
    t_all = time.time()
    for m in MODULES:
        t = time.time()
        try:
            importlib.import_module(m)
            times[m] = round(time.time() - t, 2)
        except Exception as exc:  # noqa: BLE001
            failed[m] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            print(f"  {m}: {failed[m]}")
    total = time.time() - t_all
    print("imports: " + "  ".join(f"{m} {t}s" for m, t in times.items()))
    data = {"seconds": times, "failed": failed}
    if failed:
        return result("FAIL", f"{len(failed)} of {len(MODULES)} failed: {', '.join(failed)}", data, "imports")
    result("PASS", f"{len(MODULES)} modules in {total:.1f} s", data, "imports")


def junit(path):
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except Exception:  # noqa: BLE001
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    keys = ("tests", "failures", "errors", "skipped")
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["cases"] = [
        {"name": f"{c.get('classname')}::{c.get('name')}", "seconds": float(c.get("time", 0)),
         "outcome": next((ch.tag for ch in c if ch.tag in ("failure", "error", "skipped")), "passed")}
        for s in suites for c in s.iter("testcase")
    ]
    return counts


FIGURE = re.compile(r"(\w+)=(.*?)(?=\s+\w+=|\s*$)")


def report():
    """Gathers everything into $OUT/gpu_check.json; prints the summary."""
    out = Path(os.environ["GPU_CHECK_OUT"])
    steps = []
    for line in (WORK / "steps.tsv").read_text().splitlines():
        name, status, secs, limit, rc, detail = (line.split("\t") + [""] * 6)[:6]
        steps.append({"name": name, "status": status, "seconds": float(secs), "limit_s": int(limit),
                      "rc": None if rc == "" else int(rc), "detail": detail})
    doc = {"mode": os.environ["GPU_CHECK_MODE"], "started_utc": os.environ.get("GPU_CHECK_STARTED"),
           "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "seconds": round(time.time() - float(os.environ.get("GPU_CHECK_T0", time.time())), 1),
           "steps": steps}
    for name in ("wheels", "versions", "deps", "imports"):
        f = WORK / f"{name}.json"
        if f.exists():
            doc[name] = json.loads(f.read_text())
    tests = junit(out / "gpu_tests.xml") if (out / "gpu_tests.xml").exists() else None
    if tests is not None:
        doc["gpu_tests"] = tests
    log = WORK / "step.log"
    if log.exists():
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else ""
        doc["step"] = {"last_line": last, "figures": dict(FIGURE.findall(last)) if last.startswith("gpu=") else {}}
        sj = out / "step.json"
        if sj.exists():
            try:
                doc["step"]["json"] = json.loads(sj.read_text())
            except ValueError as exc:
                doc["step"]["json_error"] = str(exc)
    (out / "gpu_check.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    n = {s: sum(1 for x in steps if x["status"] == s) for s in ("PASS", "FAIL", "SKIP")}
    print("=" * 100)
    for s in steps:
        print(f"{s['status']:<4} {s['name']:<9} {s['seconds']:6.1f}s / {s['limit_s']:>3}s  {s['detail']}")
    v = doc.get("versions", {})
    print(f"versions: torch={v.get('torch')} cuda={v.get('cuda')} gpu={v.get('gpu')} "
          f"transformers={v.get('packages', {}).get('transformers', {}).get('version')} "
          f"trl={v.get('packages', {}).get('trl', {}).get('version')}")
    if doc.get("step", {}).get("figures"):
        print("step: " + doc["step"]["last_line"])
    print(f"gpu_check: {n['PASS']} PASS, {n['FAIL']} FAIL, {n['SKIP']} SKIP in {doc['seconds']} s "
          f"({doc['mode']}) -> {out / 'gpu_check.json'}")


if __name__ == "__main__":
    {"wheels": wheels, "versions": versions, "deps": deps, "imports": imports, "report": report}[sys.argv[1]]()
PYEOF

# ---------------------------------------------------------------------------------------------
: >"$WORK/steps.tsv"
export GPU_CHECK_T0=$(date +%s) GPU_CHECK_STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

wanted() { [ -z "$ONLY" ] || case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# record NAME STATUS SECONDS LIMIT RC DETAIL: one line `STATUS NAME (...)`, one row for the JSON.
record() {
    local detail=${6//$'\t'/ }
    detail=${detail//$'\n'/ }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$detail" >>"$WORK/steps.tsv"
    printf '%s %s (%ss): %s\n' "$2" "$1" "$3" "$detail"
}

# run_step NAME LIMIT JUDGE CMD...: runs CMD under `timeout`, its output into $WORK/NAME.log, then
# JUDGE (result: the command's `RESULT STATUS detail` line; rc: its exit status; pytest; step) decides.
run_step() {
    local name=$1 limit=$2 judge=$3 t0 secs rc status detail left
    shift 3
    left=$((BUDGET - ($(date +%s) - T_START)))
    if [ "$left" -lt 5 ]; then
        record "$name" FAIL 0 "$limit" "" "not run: the ${BUDGET} s budget of the whole check is spent"
        return
    fi
    [ "$left" -ge "$limit" ] || limit=$left
    local cmd="$*"
    [ ${#cmd} -le 200 ] || cmd="${cmd:0:200} ..."
    echo "--- $name (limit ${limit}s): $cmd"
    t0=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
    rc=${PIPESTATUS[0]}
    t0=$((($(date +%s%N) - t0) / 100000000))
    secs=$((t0 / 10)).$((t0 % 10))
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        status=FAIL detail="timed out after ${limit}s (T_$(echo "$name" | tr 'a-z-' 'A-Z_')=... to change)"
    else
        read -r status detail < <("judge_$judge" "$rc" "$WORK/$name.log")
    fi
    record "$name" "$status" "$secs" "$limit" "$rc" "$detail"
}

judge_result() {
    local line
    line=$(grep -E '^RESULT (PASS|FAIL|SKIP) ' "$2" | tail -1)
    if [ -n "$line" ]; then echo "${line#RESULT }"; else echo "FAIL exited with status $1 and no result (see the log above)"; fi
}

judge_pip() {
    local n
    n=$(find "$WHL_DIR" -maxdepth 1 -type f -name '*.whl' | wc -l)
    if [ "$1" != 0 ]; then
        echo "FAIL exit status $1: $(grep -v '^WARNING: Location' "$2" | tail -1)"
    elif [ "$DRY" = 1 ]; then
        echo "PASS pip would install the $n wheels for CPython 3.12 x86-64 (nothing installed)"
    else
        echo "PASS $n wheels installed into $WORK/site, first on PYTHONPATH"
    fi
}

judge_pytest() {
    local summary passed
    summary=$(grep -E '[0-9]+ (passed|failed|skipped|deselected|errors?)|no tests ran' "$2" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')
    passed=$(echo "$summary" | grep -oE '[0-9]+ passed' | cut -d' ' -f1)
    if [ "$1" = 5 ]; then
        echo "SKIP no gpu-marked test ran ($summary)"
    elif [ "$1" = 0 ] && [ "${passed:-0}" -gt 0 ]; then
        echo "PASS $summary"
    elif [ "$1" = 0 ]; then
        echo "SKIP $summary"
    else
        echo "FAIL exit status $1: ${summary:-$(tail -1 "$2")}"
    fi
}

judge_step() {
    local last
    last=$(grep -v '^\s*$' "$2" | tail -1)
    if [ "$1" = 0 ] && { [[ "$last" == gpu=none* ]] || [[ "$last" =~ (^|[[:space:]])SKIP ]]; }; then
        echo "SKIP $last"
    elif [ "$1" = 0 ] && [[ "$last" == gpu=* ]]; then
        echo "PASS $last"
    else
        echo "FAIL exit status $1: $last"
    fi
}

echo "gpu_check: mode $MODE, python $PY, out $OUT, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if ! command -v "$PY" >/dev/null 2>&1 && [ ! -x "$PY" ]; then
    echo "gpu_check: no python at '$PY' (set PYTHON=...)"
    finish 2
fi

# 1. wheels: the folder against the list.
if wanted wheels; then
    if [ "$NO_WHEELS" = 1 ]; then
        record wheels SKIP 0 "$T_WHEELS" "" "--no-wheels: $WHL_DIR/ neither checked nor installed"
    elif [ ! -d "$WHL_DIR" ]; then
        if [ "$DRY" = 1 ]; then
            record wheels FAIL 0 "$T_WHEELS" "" "no $WHL_DIR/ folder here: run \`make gpu-wheels\` first (or pass --no-wheels)"
        else
            record wheels SKIP 0 "$T_WHEELS" "" "no $WHL_DIR/ folder: using the packages installed for $PY (on the lent machine, name .whl in the call's carry)"
        fi
    else
        run_step wheels "$T_WHEELS" result "$PY" "$WORK/helper.py" wheels
    fi
fi

# 2. install: into a temporary folder, never from the network (--dry-run: pip only checks the tags).
TAGS=(--python-version 3.12 --implementation cp --abi cp312 --platform manylinux2014_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform linux_x86_64)
# A device run installs them whatever --only says: every later step needs them.
if wanted install || [ "$MODE" = device ]; then
    if [ "$NO_WHEELS" = 1 ] || [ ! -d "$WHL_DIR" ]; then
        record install SKIP 0 "$T_INSTALL" "" "no wheels to install"
    elif [ "$DRY" = 1 ]; then
        run_step install "$T_INSTALL" pip "$PY" -m pip install --dry-run --quiet --no-index --no-deps --ignore-installed \
            --disable-pip-version-check --target "$WORK/site" "${TAGS[@]}" --only-binary=:all: "$WHL_DIR"/*.whl
    else
        run_step install "$T_INSTALL" pip "$PY" -m pip install --quiet --no-index --no-deps --no-compile \
            --no-cache-dir --disable-pip-version-check --target "$WORK/site" "$WHL_DIR"/*.whl
        export PYTHONPATH="$WORK/site:$PYTHONPATH" GPU_CHECK_SITE=$WORK/site
    fi
fi

# 3-5. what is there, and whether it fits.
wanted versions && run_step versions "$T_VERSIONS" result "$PY" "$WORK/helper.py" versions
wanted deps && run_step deps "$T_DEPS" result "$PY" "$WORK/helper.py" deps
wanted imports && run_step imports "$T_IMPORTS" result "$PY" "$WORK/helper.py" imports

# 6. the gpu-marked tests (they skip without CUDA).
if wanted gpu-tests; then
    run_step gpu-tests "$T_GPU_TESTS" pytest "$PY" -m pytest -m gpu -q tests/ -p no:cacheprovider \
        --junitxml="$OUT/gpu_tests.xml"
fi

# 7. one measured GRPO step (bench/gpu/step.py).
if wanted step; then
    if [ -f bench/gpu/step.py ]; then
        run_step step "$T_STEP" step "$PY" bench/gpu/step.py --out "$OUT/step.json"
    else
        record step SKIP 0 "$T_STEP" "" "bench/gpu/step.py is not there"
    fi
fi

"$PY" "$WORK/helper.py" report || {
    echo "gpu_check: the report failed; the steps were:"
    cat "$WORK/steps.tsv"
    cp "$WORK/steps.tsv" "$OUT/gpu_check_steps.tsv"
}
if cut -f2 "$WORK/steps.tsv" | grep -qx FAIL; then finish 1; fi
finish 0
