#!/usr/bin/env bash
# The demo exporter and Debian's Prometheus side by side, Prometheus loading
# examples/prometheus.yml and the shipped alert rules, until Ctrl-C:
#   ./examples/run-local.sh
# then http://localhost:9090 (/alerts, /rules, /graph) and http://localhost:10360/metrics.
#
# Needs the exporter installed in .venv (README, Quick start) and Prometheus on PATH
# (`apt-get install prometheus` on Debian or Ubuntu). Ports: EXPORTER_PORT (10360),
# WEBHOOK_PORT (10361), PROMETHEUS_PORT (9090). State, Prometheus' data and both logs go to
# RUN_DIR (examples/.run), so a second run starts from the first one's numbers.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
exporter_port=${EXPORTER_PORT:-10360}
webhook_port=${WEBHOOK_PORT:-10361}
prometheus_port=${PROMETHEUS_PORT:-9090}
run_dir=${RUN_DIR:-$root/examples/.run}

python=${PYTHON:-$root/.venv/bin/python}
if ! "$python" -c "import exporter" 2>/dev/null; then
    echo "run-local: the exporter is not installed for $python;" \
         "see the README's Quick start (or set PYTHON)" >&2
    exit 1
fi
prometheus=${PROMETHEUS:-$(command -v prometheus || true)}
if [ -z "$prometheus" ]; then
    echo "run-local: prometheus not found on PATH; on Debian or Ubuntu: apt-get install prometheus" \
         "(or set PROMETHEUS to its path)" >&2
    exit 1
fi

mkdir -p "$run_dir/tsdb"
# The example as it is, but for the exporter's port and the rules file's absolute path.
sed -e "s|127.0.0.1:10360|127.0.0.1:$exporter_port|" \
    -e "s|\.\./helm/|$root/helm/|" \
    "$root/examples/prometheus.yml" >"$run_dir/prometheus.yml"

pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Demo mode whatever D360_* the shell holds: only the ports and the state path are set.
# shellcheck disable=SC2046 # one `-u NAME` pair per variable
env $(compgen -e | grep '^D360_' | sed 's/^/-u /') \
    D360_DEMO=true \
    D360_LISTEN_ADDRESS="127.0.0.1:$exporter_port" \
    D360_WEBHOOK_LISTEN_ADDRESS="127.0.0.1:$webhook_port" \
    D360_STATE_PATH="$run_dir/demo.sqlite3" \
    D360_LOG_FORMAT=json \
    "$python" -m exporter >"$run_dir/exporter.log" 2>&1 &
pids+=("$!")
"$prometheus" --config.file="$run_dir/prometheus.yml" --storage.tsdb.path="$run_dir/tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port" >"$run_dir/prometheus.log" 2>&1 &
pids+=("$!")

# Ready when each answers; one that exits first shows why.
wait_ready() {  # name url pid
    until "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
            "$2" 2>/dev/null; do
        if ! kill -0 "$3" 2>/dev/null; then
            echo "run-local: $1 exited; the end of $run_dir/$1.log:" >&2
            tail -n 20 "$run_dir/$1.log" >&2
            exit 1
        fi
        sleep 0.5
    done
}
wait_ready exporter "http://127.0.0.1:$exporter_port/healthz" "${pids[0]}"
wait_ready prometheus "http://127.0.0.1:$prometheus_port/-/ready" "${pids[1]}"

cat <<EOF
The demo exporter and Prometheus are running (Ctrl-C stops both).
  Exporter:   http://localhost:$exporter_port/metrics  (demo mode: a simulated fleet)
  Prometheus: http://localhost:$prometheus_port  (alerts: /alerts, rules: /rules, targets: /targets)
  Try:        sum by (client_id, currency) (whatsapp_cost_total)
  Logs:       $run_dir/exporter.log, $run_dir/prometheus.log
EOF

# Until Ctrl-C, or until one of the two stops by itself.
set +e
wait -n "${pids[@]}"
status=$?
echo "run-local: a process stopped (exit $status); see the logs in $run_dir" >&2
exit 1
