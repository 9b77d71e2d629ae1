# Sourced by the bench scripts that start `veilfs mount` in the background.
# wait_mounted OUT ERR PID: returns once veilfs printed "veilfs: mounted" to OUT; fails (showing
# ERR) if the process PID exits first or nothing comes within 30 s.
wait_mounted() {
	local out=$1 err=$2 pid=$3
	for _ in $(seq 600); do
		grep -q '^veilfs: mounted' "$out" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || { cat "$err" >&2; return 1; }
		sleep 0.05
	done
	echo "veilfs did not mount within 30 s" >&2
	return 1
}
