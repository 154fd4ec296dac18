# Sourced by the comm test scripts: comm_free_port prints a TCP port that is
# free now, below the ephemeral range (so the ranks' own listening sockets,
# which take ephemeral ports, cannot take it meanwhile).
comm_free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - <<'PY'
import random, socket
for _ in range(200):
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
PY
  else
    echo $((20000 + ($$ * 7 + $(date +%N | cut -c1-4)) % 12000))
  fi
}

# comm_check_shm: fails when /dev/shm holds a name "pipec-PID-..." whose
# process is gone (a leak; names of live processes belong to running jobs).
comm_check_shm() {
  for f in /dev/shm/pipec-*; do
    [ -e "$f" ] || continue
    pid=$(basename "$f" | cut -d- -f2)
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "FAIL: shared memory left behind: $f"
      return 1
    fi
  done
  return 0
}
