#!/bin/sh
# Container entrypoint, run as the container's root with only the
# capabilities podman gave it.  The tun node podman passes in is a copy of
# the host's (0600 root here); the service user gets group access to it so
# that a reload can still create devices after the router dropped to it.
# The host's node is not touched.
set -e
if [ -c /dev/net/tun ] && getent group router >/dev/null; then
    chgrp router /dev/net/tun 2>/dev/null && chmod 0660 /dev/net/tun 2>/dev/null || true
fi
exec router "$@"
