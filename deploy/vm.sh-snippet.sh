# In vm.sh, cmd_mount() without the `while true; do virtiofsd ...; done` loop:
# healer holds the socket, runs virtiofsd, respawns it, and remounts in the guest.
cmd_mount() {
    healer watch --config "$WORK_DIR/run/healer.toml" >>"$WORK_DIR/run/healer.log" 2>&1 &
    echo $! >"$WORK_DIR/run/healer.pid"
    # The socket exists (and accepts) as soon as healer holds it, before virtiofsd runs.
    for _ in $(seq 50); do [ -S "$WORK_DIR/run/rootextra_test.sock" ] && break; sleep 0.1; done
    ch-remote --api-socket "$WORK_DIR/run/clh.sock" add-fs \
        tag=rootextra_test,socket="$WORK_DIR/run/rootextra_test.sock",id=fs_rootextra_test
}

cmd_umount() {
    # SIGTERM: healer stops virtiofsd and removes the socket.
    [ -f "$WORK_DIR/run/healer.pid" ] && kill "$(cat "$WORK_DIR/run/healer.pid")"
}
