#!/bin/sh
# veilfs example: hand a folder to an agent inside bubblewrap.
#
#   examples/agent-sandbox.sh ~/Projects/x claude
#   examples/agent-sandbox.sh ~/Projects/x sh -c 'ls; cat README.md'
#
# The agent runs in a private, filtered, redacted view of the folder (snapshot mode: every
# change it makes is stored first and can be undone), with no network, the real folder and
# the store hidden, the rest of the system read-only. When it exits, veilfs unmounts and
# prints what happened and the commands to review and roll back.
#
# Environment: VEILFS (the binary, default `veilfs`), VEILFS_PROFILE (default: the built-in
# default profile, in snapshot mode here), VEILFS_MANIFEST (the agent's manifest, optional),
# VEILFS_STORE (where snapshots go, default: veilfs's per-folder store).
#
# Tested by tests/it/examples.rs.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 FOLDER COMMAND [ARGS...]" >&2
    exit 2
fi
folder=$1
shift

VEILFS=${VEILFS:-veilfs}
set -- --sandbox --mode snapshot "$folder" -- "$@"
if [ -n "${VEILFS_STORE:-}" ]; then set -- --store "$VEILFS_STORE" "$@"; fi
if [ -n "${VEILFS_MANIFEST:-}" ]; then
    # Show the person what the agent asked for and what it gets, before it starts.
    if [ -n "${VEILFS_PROFILE:-}" ]; then
        "$VEILFS" consent --profile "$VEILFS_PROFILE" --mode snapshot "$VEILFS_MANIFEST" >&2
    else
        "$VEILFS" consent --mode snapshot "$VEILFS_MANIFEST" >&2
    fi
    set -- --manifest "$VEILFS_MANIFEST" "$@"
fi
if [ -n "${VEILFS_PROFILE:-}" ]; then set -- --profile "$VEILFS_PROFILE" "$@"; fi

exec "$VEILFS" run "$@"
