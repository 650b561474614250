# In vm.sh, cmd_mount() without the `while true; do virtiofsd ...; done` loop:
# healer holds the socket, runs virtiofsd, respawns it, and remounts in the guest.
# healer starts a small holder process that owns the socket and virtiofsd: if healer
# itself is killed or restarted (or the terminal hangs up), the share keeps serving.
cmd_mount() {
    healer watch --config "$WORK_DIR/run/healer.toml" >>"$WORK_DIR/run/healer.log" 2>&1 &
    echo $! >"$WORK_DIR/run/healer.pid"
    # The socket exists (and accepts) as soon as the holder holds it, before virtiofsd runs.
    for _ in $(seq 50); do [ -S "$WORK_DIR/run/rootextra_test.sock" ] && break; sleep 0.1; done
    ch-remote --api-socket "$WORK_DIR/run/clh.sock" add-fs \
        tag=rootextra_test,socket="$WORK_DIR/run/rootextra_test.sock",id=rootextra_test
}

cmd_umount() {
    # Everything: healer, then every virtiofsd and socket of this configuration.
    # (A plain `kill` of healer stops healer only: the share keeps serving for the next.)
    healer stop --config "$WORK_DIR/run/healer.toml"
}
