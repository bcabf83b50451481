#!/usr/bin/env bash
# `make images`: build the project's images, named and tagged as the Helm chart and docker/compose.yaml name them:
#   $IMAGE_REGISTRY/airflow:$VERSION          the Airflow components (arena_ops without torch or vLLM, dags, plugins)
#   $IMAGE_REGISTRY/ray:$VERSION-<variant>    Ray nodes: serving (vLLM) and training (DeepSpeed + TRL); RAY_VARIANTS
# and, where the official base images cannot be pulled (BASE=local), the stand-ins docker/compose.local.yaml uses.
#
#   docker/images.sh            build (BASE=auto: the official bases when a registry answers, else local ones)
#   docker/images.sh --list     print the project's image references and exit
#
# Settings (environment): IMAGE_REGISTRY (ghcr.io/arena-flywheel), RAY_VARIANTS ("cpu"; "cpu gpu" for both),
# BASE (auto | official | local), WHEELHOUSE (a directory with torch==2.13.0+cpu when PyTorch's index is not
# reachable; default: the directory pip's own find-links names, if it holds that wheel), ARENA_IMAGES_CACHE.
#
# No Docker engine answering? When run as root, this installs Debian's docker.io if needed and starts dockerd with
# its own state (/var/lib/arena-docker) and socket (unix:///run/arena-docker/docker.sock), and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${IMAGE_REGISTRY:-ghcr.io/arena-flywheel}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
VARIANTS=${RAY_VARIANTS:-cpu}
BASE=${BASE:-auto}
CACHE=${ARENA_IMAGES_CACHE:-$HOME/.cache/arena-flywheel/images}
DOCKERD_SOCK=/run/arena-docker/docker.sock

AIRFLOW_OFFICIAL=apache/airflow:3.3.2-python3.11
RAY_OFFICIAL_cpu=rayproject/ray:2.60.0-py311-cpu
RAY_OFFICIAL_gpu=rayproject/ray:2.60.0-py311-cu128
ROOTFS_IMAGE=arena-local/debian:bookworm-py311
AIRFLOW_LOCAL=arena-local/airflow-base:3.11
RAY_LOCAL=arena-local/ray-base:3.11
# Stand-ins for third-party images of the compose stack (docker/compose.local.yaml).
POSTGRES_LOCAL=arena-local/postgres:15
SEAWEEDFS_LOCAL=arena-local/seaweedfs:4.48

if [[ "${1:-}" == --list ]]; then
    echo "$REGISTRY/airflow:$VERSION"
    for v in $VARIANTS; do echo "$REGISTRY/ray:$VERSION-$v"; done
    exit 0
fi

say() { printf '\033[1m[images]\033[0m %s\n' "$*"; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }
mkdir -p "$CACHE"
started=$(date +%s)

# --- a Docker engine ---------------------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    if [[ -z "${DOCKER_HOST:-}" && -S $DOCKERD_SOCK ]] && DOCKER_HOST=unix://$DOCKERD_SOCK docker info >/dev/null 2>&1; then
        export DOCKER_HOST=unix://$DOCKERD_SOCK
    else
        [[ $(id -u) == 0 ]] || die "no Docker engine answers (docker info) and starting one needs root"
        if ! command -v dockerd >/dev/null; then
            say "no dockerd here: installing Debian's docker.io"
            apt-get install -y -qq --no-install-recommends docker.io >/dev/null \
                || { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io >/dev/null; }
        fi
        mkdir -p /run/arena-docker /var/lib/arena-docker
        # No bridge and no iptables: these machines allow neither; builds and the compose stack use the host network.
        say "no Docker engine was running: starting dockerd (state /var/lib/arena-docker, log $CACHE/dockerd.log)"
        nohup dockerd --iptables=false --bridge=none --storage-driver=overlay2 --data-root=/var/lib/arena-docker \
            --exec-root=/run/arena-docker --pidfile=/run/arena-docker/docker.pid --host=unix://$DOCKERD_SOCK \
            >"$CACHE/dockerd.log" 2>&1 &
        export DOCKER_HOST=unix://$DOCKERD_SOCK
        for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || die "dockerd did not answer within 120 s; see $CACHE/dockerd.log"
        say "dockerd is up. In your shell: export DOCKER_HOST=$DOCKER_HOST   (stop it: kill \$(cat /run/arena-docker/docker.pid))"
    fi
fi

# --- base images ---------------------------------------------------------------------------------------------------
if [[ $BASE == auto ]]; then
    if docker image inspect $AIRFLOW_OFFICIAL >/dev/null 2>&1 || timeout 120 docker pull -q $AIRFLOW_OFFICIAL >/dev/null 2>&1; then
        BASE=official
    else
        BASE=local
        say "the official base images cannot be pulled here: bootstrapping local ones (Debian 12, Python 3.11)"
    fi
fi

build() {  # build <dockerfile> <tag> [docker build args...]
    local file=$1 tag=$2 t0
    shift 2
    t0=$(date +%s)
    say "building $tag from $file"
    # The legacy builder with the host network: BuildKit needs a bridge these machines do not allow.
    if ! DOCKER_BUILDKIT=0 docker build --network host -f "$file" -t "$tag" "$@" . >"$CACHE/build.log" 2>&1; then
        tail -40 "$CACHE/build.log" >&2
        die "building $tag from $file failed (whole log: $CACHE/build.log)"
    fi
    say "built $tag in $(($(date +%s) - t0)) s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}'))"
}

local_bases() {
    if ! docker image inspect $ROOTFS_IMAGE >/dev/null 2>&1; then
        local tarball=$CACHE/debian-bookworm-py311.tar
        if [[ ! -s $tarball ]]; then
            [[ $(id -u) == 0 ]] || die "bootstrapping a Debian root filesystem needs root (debootstrap)"
            command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
            local root
            root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
            say "debootstrap bookworm into $root"
            debootstrap --variant=minbase \
                --include=python3,python3-venv,ca-certificates,curl,procps,libnuma1,libgomp1 \
                bookworm "$root" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 \
                || die "debootstrap failed; see $CACHE/debootstrap.log"
            # Egress here may pass a TLS-inspecting proxy whose CA the host trusts: the local base trusts it too, so
            # pip and apt work inside builds. The official-image path never sees these certificates.
            if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
                say "trusting the host's extra CA certificates in the local base: $(ls /usr/local/share/ca-certificates)"
                cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
                chroot "$root" update-ca-certificates >/dev/null
            fi
            rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
            tar -C "$root" -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
            rm -rf "$root"
        fi
        say "importing $ROOTFS_IMAGE"
        docker import --change 'CMD ["/bin/bash"]' "$tarball" $ROOTFS_IMAGE >/dev/null
    fi
    build docker/local/base.Dockerfile $AIRFLOW_LOCAL \
        --build-arg USER_NAME=airflow --build-arg USER_UID=50000 --build-arg USER_GID=0 \
        --build-arg USER_HOME=/home/airflow --build-arg HOME_DIRS=/opt/airflow
    # (Rebuilt every time: Docker's layer cache makes an unchanged one take a second.)
    # DeepSpeed compiles its CPU ops on first use: the Ray base carries a compiler and Python's headers.
    build docker/local/base.Dockerfile $RAY_LOCAL \
        --build-arg USER_NAME=ray --build-arg USER_UID=1000 --build-arg USER_GID=100 --build-arg USER_HOME=/home/ray \
        --build-arg "PACKAGES=build-essential python3-dev"
    build docker/local/postgres.Dockerfile $POSTGRES_LOCAL
    build docker/local/seaweedfs.Dockerfile $SEAWEEDFS_LOCAL \
        --build-arg BASE_IMAGE=$AIRFLOW_LOCAL
}

airflow_base=$AIRFLOW_OFFICIAL
if [[ $BASE == local ]]; then
    local_bases
    airflow_base=$AIRFLOW_LOCAL
fi

# --- torch==2.13.0+cpu for the CPU Ray image -------------------------------------------------------------------------
# It lives on PyTorch's CPU index (the Dockerfile's default). Where that is not reachable, a local directory holding the
# wheel is served on loopback for the build (the build uses the host network).
torch_args=()
server=""
if [[ " $VARIANTS " == *" cpu "* ]]; then
    wheelhouse=${WHEELHOUSE:-$(pip config get global.find-links 2>/dev/null || true)}
    if [[ -n $wheelhouse ]] && compgen -G "$wheelhouse/torch-2.13.0+cpu-*.whl" >/dev/null; then
        # A fixed port keeps the build argument, and so Docker's layer cache, the same from one build to the next.
        port=${WHEELHOUSE_PORT:-47811}
        if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
            port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        fi
        python3 -m http.server --bind 127.0.0.1 --directory "$wheelhouse" "$port" >/dev/null 2>&1 &
        server=$!
        trap 'kill $server 2>/dev/null || true' EXIT
        torch_args=(--build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/" --build-arg TORCH_CPU_INDEX=)
        say "torch==2.13.0+cpu from $wheelhouse (served on 127.0.0.1:$port for the build)"
    fi
fi

# --- the project's images --------------------------------------------------------------------------------------------
build docker/airflow.Dockerfile "$REGISTRY/airflow:$VERSION" --build-arg "BASE_IMAGE=$airflow_base"
for v in $VARIANTS; do
    official=RAY_OFFICIAL_$v
    [[ -n ${!official:-} ]] || die "unknown Ray variant $v (cpu or gpu)"
    ray_base=${!official}
    [[ $BASE == local ]] && ray_base=$RAY_LOCAL
    extra=()
    [[ $v == cpu ]] && extra=("${torch_args[@]}")
    build docker/ray.Dockerfile "$REGISTRY/ray:$VERSION-$v" --build-arg "VARIANT=$v" --build-arg "BASE_IMAGE=$ray_base" \
        "${extra[@]}"
done

say "done in $(($(date +%s) - started)) s (bases: $BASE):"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^($REGISTRY/|arena-local/)" | sed 's/^/  /' || true
[[ -n ${DOCKER_HOST:-} ]] && say "these images are in the engine at DOCKER_HOST=$DOCKER_HOST"
exit 0
