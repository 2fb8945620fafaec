#!/usr/bin/env bash
# Zero-downtime binary upgrade of a Gatehouse gateway running in the background (`-d`).
#
# Installed as /usr/local/bin/gatehouse-upgrade, it is the ExecReload= of
# conf/gatehouse.service (`systemctl reload gatehouse`), and it can be run by hand the same
# way. Install the new binary over the old one first; then this script:
#
#   1. checks the config with the new binary (`gatehouse -t`): on an error nothing changes;
#   2. starts the new binary with `-d -u`: it loads the config and waits on
#      `server.upgrade_sock` for the listening sockets of the running process;
#   3. once that socket exists, sends SIGQUIT to the running process (pid from
#      `server.pid_file`): it hands its listening sockets over, stops accepting, and finishes
#      the requests it has (for up to `server.grace_period_seconds`) before it exits;
#   4. waits until the new process has written its own pid into the pid file.
#
# The listening sockets are never closed, so no connection is refused. The paths below must
# be the ones in the config's `server` section:
#
#   GATEHOUSE_BIN           the (new) binary               default /usr/local/bin/gatehouse
#   GATEHOUSE_CONFIG        the config file                default /etc/gatehouse/gatehouse.yaml
#   GATEHOUSE_PID_FILE      server.pid_file                default /run/gatehouse/gatehouse.pid
#   GATEHOUSE_UPGRADE_SOCK  server.upgrade_sock            default /run/gatehouse/upgrade.sock
#   GATEHOUSE_UPGRADE_WAIT  seconds to wait at each step   default 15
#
# For a change of the config file alone, no upgrade is needed: the gateway reloads it by
# itself (file watch), on SIGHUP, or on `POST /reload` of the admin API. See
# docs/operations.md.

set -euo pipefail

bin="${GATEHOUSE_BIN:-/usr/local/bin/gatehouse}"
config="${GATEHOUSE_CONFIG:-/etc/gatehouse/gatehouse.yaml}"
pid_file="${GATEHOUSE_PID_FILE:-/run/gatehouse/gatehouse.pid}"
upgrade_sock="${GATEHOUSE_UPGRADE_SOCK:-/run/gatehouse/upgrade.sock}"
wait_s="${GATEHOUSE_UPGRADE_WAIT:-15}"

log() { echo "gatehouse-upgrade: $*" >&2; }
die() {
    log "$*"
    exit 1
}

alive() { [[ "$1" =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null; }

# The running process.
[[ -r "$pid_file" ]] || die "cannot read the pid file $pid_file (is gatehouse running with -d, and is server.pid_file $pid_file?)"
old_pid="$(tr -d '[:space:]' <"$pid_file")"
alive "$old_pid" || die "no running process with the pid in $pid_file (\"$old_pid\")"

# 1. The new binary must accept the config; it prints the error otherwise.
"$bin" -t -c "$config" >/dev/null || die "the config was refused; nothing changed (pid $old_pid keeps serving)"

# 2. The new process. It creates the upgrade socket itself; a leftover one from an earlier
#    upgrade is removed so that step 3 waits for the new one.
rm -f -- "$upgrade_sock"
"$bin" -d -u -c "$config" &
starter=$!

# 3. Once the new process listens on the upgrade socket, the old one hands over.
deadline=$((SECONDS + wait_s))
until [[ -S "$upgrade_sock" ]]; do
    if ! kill -0 "$starter" 2>/dev/null; then
        wait "$starter" || true
        die "the new process exited before taking over; nothing changed (pid $old_pid keeps serving)"
    fi
    if ((SECONDS >= deadline)); then
        kill "$starter" 2>/dev/null || true
        die "the new process did not open $upgrade_sock within ${wait_s}s (is server.upgrade_sock $upgrade_sock?); nothing changed (pid $old_pid keeps serving)"
    fi
    sleep 0.1
done
log "handing the listening sockets of pid $old_pid over"
kill -QUIT "$old_pid"

# The starting process exits 0 once it holds the sockets and has gone to the background.
if ! wait "$starter"; then
    die "the new process failed to take the sockets over (see its log); pid $old_pid is shutting down: start gatehouse again"
fi

# 4. The new daemon writes its pid (the old file is renamed to $pid_file.old).
deadline=$((SECONDS + wait_s))
while :; do
    new_pid="$(tr -d '[:space:]' <"$pid_file" 2>/dev/null || true)"
    if [[ "$new_pid" != "$old_pid" ]] && alive "$new_pid"; then
        break
    fi
    ((SECONDS < deadline)) || die "no new pid in $pid_file within ${wait_s}s"
    sleep 0.1
done
log "upgraded: pid $new_pid serves; pid $old_pid finishes its requests and exits"
