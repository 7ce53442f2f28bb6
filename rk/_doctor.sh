# rk doctor's checks on a host, after roles/rk_python's probe (rendered in check mode, so it
# writes nothing). POSIX sh, read-only, no Python needed. Prints "RK:key=value" lines only.
echo "RK:sshd_port=$(printf '%s\n' "${SSH_CONNECTION:-}" | awk '{print $4}')"
for f in /etc/ssh/sshd_config /etc/ssh/sshd_config.d/*.conf; do
  [ -r "$f" ] || continue
  # First value wins in sshd_config, as in ssh_config.
  v=$(awk 'tolower($1)=="maxsessions" {print $2; exit}' "$f"); [ -n "$v" ] && [ -z "$maxs" ] && maxs=$v
  v=$(awk 'tolower($1)=="allowstreamlocalforwarding" {print $2; exit}' "$f"); [ -n "$v" ] && [ -z "$sl" ] && sl=$v
done
echo "RK:max_sessions=${maxs:-}"
echo "RK:streamlocal_config=${sl:-}"
# Interpreter rk_kernel will use: the probe's record, else the venv rk would make.
py=$(cat "$HOME/.local/share/rk/python-$(printf %s "$(uname -n)" | tr -c 'A-Za-z0-9_.-' _)" 2>/dev/null)
[ -n "$py" ] && echo "RK:recorded=$py"
venv="$HOME/.local/share/rk/venv"
[ -z "$py" ] && [ -x "$venv/bin/python" ] && py="$venv/bin/python"
[ -r "$venv/.rk-fingerprint" ] && echo "RK:fingerprint=$(cat "$venv/.rk-fingerprint")"
if [ -n "$py" ]; then
  echo "RK:kernel_python=$py"
  # What the kernel imports at start, timed in the interpreter; versions from the same run.
  "$py" -c '
import time
t = time.perf_counter()
try:
    import ipykernel.kernelapp, ipykernel
    print("RK:import_s=%.2f" % (time.perf_counter() - t))
    print("RK:kernel_ipykernel=" + ipykernel.__version__)
except Exception as e:
    print("RK:import_error=%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
try:
    import spyder_kernels
    print("RK:spyder_kernels=" + spyder_kernels.__version__)
except Exception:
    pass
import sys
print("RK:kernel_version=%d.%d.%d" % sys.version_info[:3])
' 2>/dev/null
fi
# Free space and inodes where kernels keep their state (the nearest existing directory).
state="$HOME/.local/state/rk"
while [ ! -d "$state" ]; do state=${state%/*}; [ -n "$state" ] || state=/; done
echo "RK:state_dir=$state"
df -Pk "$state" 2>/dev/null | awk 'NR==2 {print "RK:free_kib=" $4}'
df -Pi "$state" 2>/dev/null | awk 'NR==2 {print "RK:free_inodes=" $4}'
# logind: the same question rk_kernel's module asks (logind_kill_settings), over busctl.
if command -v busctl >/dev/null 2>&1; then
  busctl get-property org.freedesktop.login1 /org/freedesktop/login1 org.freedesktop.login1.Manager \
    KillUserProcesses 2>/dev/null | awk '{print "RK:kill_user_processes=" $2}'
fi
[ -e "/var/lib/systemd/linger/$(id -un)" ] && echo "RK:linger=1"
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "RK:nvidia_smi=1"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -n 8 | sed 's/^/RK:gpu=/'
fi
exit 0
