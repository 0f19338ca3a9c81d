#!/usr/bin/env bash
# Builds the router's container image with podman, with no registry:
#   1. a Debian 12 base image made with debootstrap from this machine's apt
#      mirror (once; kept as localhost/tun-router-base:bookworm-4),
#   2. wheels of the Python dependencies from this machine's package index,
#   3. podman build of the Containerfile (the C core is compiled inside).
# Usage: bash scripts/container.sh build     (as root)
#        bash scripts/container.sh seccomp   (the seccomp profile attached
#                                             interfaces need, to stdout)
# podman here needs the runc runtime and explicit ulimits (see
# docs/deployment.md): crun refuses this machine's hybrid cgroup layout.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=localhost/tun-router-base:bookworm-4
IMAGE=${IMAGE:-localhost/tun-router:latest}
WORK=build/container
PODMAN=(podman --runtime runc)

need() {
    local missing=()
    for p in podman runc debootstrap; do
        command -v "$p" >/dev/null || missing+=("$p")
    done
    if ((${#missing[@]})); then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap uidmap >/dev/null
    fi
}

mirror() {
    # The first http(s) URI of the machine's Debian sources.
    local uri
    uri=$(grep -hoE '^(URIs:|deb) *\[?[^]]*\]? *https?://[^ ]+' /etc/apt/sources.list.d/*.sources \
              /etc/apt/sources.list 2>/dev/null | grep -oE 'https?://[^ ]+' | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

base() {
    if "${PODMAN[@]}" image exists "$BASE"; then
        return
    fi
    local root
    root=$(mktemp -d /tmp/rtbase.XXXXXX)
    echo "container: debootstrap bookworm from $(mirror)"
    debootstrap --variant=minbase --include=python3,python3-venv,iproute2,udhcpc,dnsmasq-base,libpcap0.8,ca-certificates,passwd \
        bookworm "$root" "$(mirror)" >"$root.log" 2>&1 || { tail -n 20 "$root.log"; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | "${PODMAN[@]}" import - "$BASE" >/dev/null
    rm -rf "$root" "$root.log"
}

context() {
    rm -rf "$WORK/ctx"
    mkdir -p "$WORK/ctx/router/native" "$WORK/ctx/router/config" "$WORK/ctx/router/portmap" \
             "$WORK/ctx/router/ctl" "$WORK/ctx/router/flowlog" \
             "$WORK/ctx/router/ha" \
             "$WORK/ctx/conf" \
             "$WORK/ctx/scripts" "$WORK/ctx/wheels"
    cp Containerfile pyproject.toml setup.py README.md "$WORK/ctx/"
    cp router/*.py router/*.sh "$WORK/ctx/router/"
    cp router/config/*.py "$WORK/ctx/router/config/"
    cp router/portmap/*.py "$WORK/ctx/router/portmap/"
    cp router/ha/*.py "$WORK/ctx/router/ha/"
    cp router/ctl/*.py "$WORK/ctx/router/ctl/"
    cp router/flowlog/*.py "$WORK/ctx/router/flowlog/"
    cp router/native/*.c router/native/*.h router/native/*.py router/native/rt.cdef \
       "$WORK/ctx/router/native/"
    rm -f "$WORK/ctx/router/native/_rt.c"
    cp conf/container.toml "$WORK/ctx/conf/"
    cp scripts/container-entrypoint.sh "$WORK/ctx/scripts/"
    # Wheels of everything the package needs, and of its build tools.
    local deps
    deps=$(.venv/bin/python -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb"));
print(" ".join(d["project"]["dependencies"] + ["setuptools>=77", "wheel"]))')
    # shellcheck disable=SC2086
    .venv/bin/python -m pip wheel -q -w "$WORK/ctx/wheels" $deps >"$WORK/wheels.log" 2>&1 ||
        { cat "$WORK/wheels.log" >&2; exit 1; }
}

case "${1:-build}" in
build)
    need
    { [ -x .venv/bin/python ] && command -v podman >/dev/null; } || bash scripts/setup.sh --test
    base
    context
    "${PODMAN[@]}" build -q --format docker -t "$IMAGE" -f "$WORK/ctx/Containerfile" "$WORK/ctx"
    # Untagged images of earlier builds (and the compile stage) go.
    "${PODMAN[@]}" image prune -f --filter label=tun-router.stage >/dev/null
    echo "container: built $IMAGE"
    ;;
seccomp)
    # podman's default seccomp profile, letting a container with CAP_BPF
    # call bpf() (Debian 12's allows it only with CAP_SYS_ADMIN; later
    # profiles allow it with CAP_BPF too).  Attached interfaces need it.
    python3 - "${2:-/usr/share/containers/seccomp.json}" <<'PY'
import json, sys
profile = json.load(open(sys.argv[1]))
for rule in profile["syscalls"]:
    if "bpf" in rule["names"] and rule["action"] == "SCMP_ACT_ERRNO":
        rule.setdefault("excludes", {}).setdefault("caps", []).append("CAP_BPF")
profile["syscalls"].append({"names": ["bpf"], "action": "SCMP_ACT_ALLOW",
                            "includes": {"caps": ["CAP_BPF"]}})
json.dump(profile, sys.stdout, indent=1)
PY
    ;;
*)
    echo "usage: $0 build | seccomp [DEFAULT-PROFILE]   (the profile goes to stdout)" >&2
    exit 2
    ;;
esac
