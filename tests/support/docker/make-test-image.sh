#!/usr/bin/env bash
# make-test-image.sh — build the tiny registry-free test image
# flocks-test-base:latest (idempotent).
#
# The image holds no binaries: only the merged-usr symlinks, a few empty dirs
# and a minimal /etc (passwd/group with root + dev uid 1000, nsswitch.conf).
# Containers must bind-mount the host's /usr read-only at /usr:
#     docker run --rm -v /usr:/usr:ro flocks-test-base:latest git --version
# (Debian 12 is merged-usr: /bin, /lib, /lib64, /sbin are symlinks into /usr,
#  so the host's /usr carries every binary and shared library, including
#  the dynamic loader /lib64/ld-linux-x86-64.so.2 -> usr/lib64/...)
#
# Idempotency: the image carries the label flocks.test-base.rev=<hash of this
# script>; an image with the same label is left alone, otherwise it is
# (re)imported. FORCE=1 rebuilds anyway.
set -euo pipefail

IMAGE="${IMAGE:-flocks-test-base:latest}"
REV="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

if [ "${FORCE:-0}" != 1 ] &&
   [ "$(docker image inspect -f '{{index .Config.Labels "flocks.test-base.rev"}}' "$IMAGE" 2>/dev/null || true)" = "$REV" ]; then
    echo "make-test-image: $IMAGE up to date (rev $REV)" >&2
    exit 0
fi

old_id="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"   # mktemp -d is 0700 and the tar's "." entry becomes the container's "/"
cd "$stage"

# merged-usr symlinks (relative, like the host's)
ln -s usr/bin bin
ln -s usr/lib lib
ln -s usr/lib64 lib64
ln -s usr/sbin sbin
mkdir -p usr etc proc dev sys workspace root home/dev tmp var/tmp run
chmod 1777 tmp var/tmp
chmod 700 root

cat > etc/passwd <<'EOF'
root:x:0:0:root:/root:/bin/sh
dev:x:1000:1000:dev:/home/dev:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat > etc/group <<'EOF'
root:x:0:
dev:x:1000:
nogroup:x:65534:
EOF
# glibc falls back to "files" for passwd/group without it, but `hosts` needs
# an explicit "files dns" for a sane resolver order.
cat > etc/nsswitch.conf <<'EOF'
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
EOF
# /etc/hosts, /etc/hostname, /etc/resolv.conf are bind-mounted by Docker.

# Everything root-owned except the dev user's home.
chown -R 0:0 .
chown 1000:1000 home/dev

# Deterministic, tiny tar (a few KB).
tar --numeric-owner --sort=name --mtime='2020-01-01 00:00Z' -cf - . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'WORKDIR /workspace' \
    --change 'CMD ["/usr/bin/sleep", "infinity"]' \
    --change "LABEL flocks.test-base.rev=$REV" \
    --message "flocks test base (host /usr must be bind-mounted at /usr)" \
    - "$IMAGE" >/dev/null

# drop the previous (now dangling) version, if unused
new_id="$(docker image inspect -f '{{.Id}}' "$IMAGE")"
[ -n "$old_id" ] && [ "$old_id" != "$new_id" ] && docker image rm "$old_id" >/dev/null 2>&1 || true
echo "make-test-image: built $IMAGE (rev $REV): $(docker image inspect -f '{{.Size}}' "$IMAGE") bytes" >&2

# Self-check (VERIFY=0 to skip): the tools the flocks tests rely on.
if [ "${VERIFY:-1}" = 1 ]; then
    docker run --rm --network none -u 1000:1000 -v /usr:/usr:ro "$IMAGE" sh -c '
        set -e
        /usr/bin/git --version >/dev/null
        /usr/bin/python3 -c "print(1)" >/dev/null
        ps -eo pid,args >/dev/null
        sleep 0.01
        [ "$(id -un)" = dev ] && [ "$HOME" = /home/dev ] && [ -w "$HOME" ] && [ -w /tmp ]
    ' && echo "make-test-image: self-check ok" >&2
fi
