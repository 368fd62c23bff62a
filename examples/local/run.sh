#!/usr/bin/env bash
# The whole pipeline on this machine: VictoriaMetrics, fleetsim (a simulated
# Consul + Kubernetes fleet), one coordinator and three scrapers, every one
# on loopback. `make run` builds ./bin and runs this; Ctrl-C stops it all.
#
# Data lives under data/run (git-ignored): VictoriaMetrics keeps its data
# across runs (data/run/vm); the coordinator's and the scrapers' state
# (data/run/coordinator, data/run/scraper-N) is wiped at every start, so
# each run begins with a fresh assignment. Logs: data/run/logs/*.log.
#
# Stopping (Ctrl-C, SIGTERM, or any child exiting) stops exactly the
# processes started here: the scrapers first, all at once (with every
# worker leaving there is no one to hand targets to, and the coordinator
# answers their Leave at once), which flush their remote write into
# VictoriaMetrics, which stops last. Each gets STOP_TIMEOUT (30)
# seconds after SIGTERM before SIGKILL.
#
# Environment: NODES (100), PODS_PER_NODE (3) size the fleet;
# READY_TIMEOUT (60) is how many seconds each process gets to be ready.
# For tests, every address can be moved (VM_PORT, FLEETSIM_PORT,
# COORDINATOR_WEB_PORT, COORDINATOR_GRPC_PORT, SCRAPER_PORTS) and CONFIG
# names another prometheus.yml, which must then point at them. The fleet's
# target ports (NODE_PORT, POD_PORT) default to 0: fleetsim picks free ones
# and registers them in its Consul and Kubernetes fakes, where the config
# finds them, so a local node_exporter on 9100 is no obstacle.
#
# Linux only (fleetsim's targets live at 127.1.x.y and 127.16.x.y, which
# only Linux routes to the loopback interface unconfigured); bash 5.1+.
if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
	echo "run.sh: needs bash 5.1 or later (for 'wait -n -p'); this is bash $BASH_VERSION" >&2
	exit 1
fi
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
BIN=$ROOT/bin
DATA=$ROOT/data/run
LOGS=$DATA/logs
CONFIG=${CONFIG:-$ROOT/examples/local/prometheus.yml}
VM_PORT=${VM_PORT:-8428}
FLEETSIM_PORT=${FLEETSIM_PORT:-8500}
NODE_PORT=${NODE_PORT:-0}
POD_PORT=${POD_PORT:-0}
COORDINATOR_WEB_PORT=${COORDINATOR_WEB_PORT:-9093}
COORDINATOR_GRPC_PORT=${COORDINATOR_GRPC_PORT:-9094}
read -r -a SCRAPER_PORTS <<<"${SCRAPER_PORTS:-9095 9096 9097}"
NODES=${NODES:-100}
PODS_PER_NODE=${PODS_PER_NODE:-3}
READY_TIMEOUT=${READY_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}

die() {
	echo "run.sh: $*" >&2
	exit 1
}

for b in victoria-metrics fleetsim coordinator scraper shardctl; do
	[[ -x $BIN/$b ]] || die "$BIN/$b is missing: run 'make run' (it builds ./bin and installs VictoriaMetrics)"
done

# Every fixed port the run binds (fleetsim checks its target ports itself,
# naming the flag, when NODE_PORT or POD_PORT is set).
declare -A PORTS=(
	[$VM_PORT]="VictoriaMetrics -httpListenAddr"
	[$FLEETSIM_PORT]="fleetsim --web.listen-address (Consul and Kubernetes APIs)"
	[$COORDINATOR_WEB_PORT]="coordinator --web.listen-address"
	[$COORDINATOR_GRPC_PORT]="coordinator --grpc.listen-address"
)
for i in "${!SCRAPER_PORTS[@]}"; do
	PORTS[${SCRAPER_PORTS[$i]}]="scraper-$i --web.listen-address"
done
((${#PORTS[@]} == 4 + ${#SCRAPER_PORTS[@]})) || die "two processes would share a port: check the *_PORT variables"
taken=0
for port in "${!PORTS[@]}"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "run.sh: port $port is taken (needed by ${PORTS[$port]}); stop what listens there (ss -ltnp 'sport = :$port')" >&2
		taken=1
	fi
done
((taken == 0)) || exit 1

rm -rf "$DATA/coordinator" "$DATA"/scraper-*
mkdir -p "$LOGS" "$DATA/vm"

# name → pid, in start order.
NAMES=()
declare -A PIDS=() LOGFILE=()

start() {
	local name=$1
	shift
	local log=$LOGS/$name.log
	# Job control only while forking: the child gets a process group of its
	# own, so a Ctrl-C at the terminal reaches this script (and make), not
	# the children, and the script stops them in order (scrapers first, so
	# they drain). Foreground commands stay in the script's group.
	set -m
	"$@" </dev/null >"$log" 2>&1 &
	PIDS[$name]=$!
	set +m
	LOGFILE[$name]=$log
	NAMES+=("$name")
}

# stop_pids NAME...: TERM, wait up to STOP_TIMEOUT seconds, then KILL.
stop_pids() {
	local name pid deadline alive
	for name in "$@"; do
		pid=${PIDS[$name]:-}
		[[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true
	done
	deadline=$((SECONDS + STOP_TIMEOUT))
	while :; do
		alive=()
		for name in "$@"; do
			pid=${PIDS[$name]:-}
			[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && alive+=("$name")
		done
		((${#alive[@]} == 0)) && break
		if ((SECONDS >= deadline)); then
			for name in "${alive[@]}"; do
				echo "run.sh: $name (pid ${PIDS[$name]}) did not stop in ${STOP_TIMEOUT}s: killing it" >&2
				kill -KILL "${PIDS[$name]}" 2>/dev/null || true
			done
			break
		fi
		sleep 0.2
	done
	for name in "$@"; do
		pid=${PIDS[$name]:-}
		[[ -n $pid ]] || continue
		wait "$pid" 2>/dev/null || true
		unset "PIDS[$name]"
		echo "  $name stopped"
	done
}

STOPPING=0
cleanup() {
	local rc=$?
	((STOPPING)) && return
	STOPPING=1
	trap '' INT TERM
	if ((${#PIDS[@]} > 0)); then
		echo "Stopping: scrapers first (they drain), then the coordinator, fleetsim and VictoriaMetrics."
		local scrapers=()
		for name in "${NAMES[@]}"; do
			[[ $name == scraper-* ]] && scrapers+=("$name")
		done
		((${#scrapers[@]} > 0)) && stop_pids "${scrapers[@]}"
		for name in coordinator fleetsim victoria-metrics; do
			stop_pids "$name"
		done
		echo "Stopped. Logs are in $LOGS."
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# http_ok PORT PATH: GET http://127.0.0.1:PORT/PATH answers 200 (bash's
# /dev/tcp, so that nothing beyond bash is needed).
http_ok() (
	exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$2" "$1" >&3
	IFS= read -r -t 2 status <&3 || exit 1
	[[ $status == "HTTP/1."[01]" 200"* ]]
) 2>/dev/null

# wait_ready NAME PORT PATH: poll until http_ok, for READY_TIMEOUT seconds,
# as long as NAME runs.
wait_ready() {
	local name=$1 port=$2 path=$3 deadline=$((SECONDS + READY_TIMEOUT))
	while ! http_ok "$port" "$path"; do
		if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
			echo "run.sh: $name exited before it was ready; the end of ${LOGFILE[$name]}:" >&2
			tail -n 20 "${LOGFILE[$name]}" >&2 || true
			exit 1
		fi
		if ((SECONDS >= deadline)); then
			echo "run.sh: $name was not ready at http://127.0.0.1:$port$path within ${READY_TIMEOUT}s; see ${LOGFILE[$name]}" >&2
			exit 1
		fi
		sleep 0.2
	done
	echo "  $name is ready (log: ${LOGFILE[$name]#"$ROOT"/})"
}

echo "Starting the local pipeline (data: ${DATA#"$ROOT"/}, logs: ${LOGS#"$ROOT"/})"

start victoria-metrics "$BIN/victoria-metrics" \
	-httpListenAddr="127.0.0.1:$VM_PORT" \
	-storageDataPath="$DATA/vm" \
	-search.latencyOffset=5s \
	-loggerLevel=WARN
wait_ready victoria-metrics "$VM_PORT" /health

start fleetsim "$BIN/fleetsim" \
	--web.listen-address="127.0.0.1:$FLEETSIM_PORT" \
	--node.port="$NODE_PORT" --pod.port="$POD_PORT" \
	--nodes="$NODES" --pods-per-node="$PODS_PER_NODE"
wait_ready fleetsim "$FLEETSIM_PORT" /-/ready
# The target ports fleetsim bound (free ones unless NODE_PORT/POD_PORT).
listening=$(grep -m1 'msg="Listening for scrapes"' "${LOGFILE[fleetsim]}" || true)
[[ $listening =~ node_port=([0-9]+) ]] && NODE_PORT=${BASH_REMATCH[1]}
[[ $listening =~ pod_port=([0-9]+) ]] && POD_PORT=${BASH_REMATCH[1]}

start coordinator "$BIN/coordinator" \
	--config.file="$CONFIG" \
	--cluster.name=local \
	--web.listen-address="127.0.0.1:$COORDINATOR_WEB_PORT" \
	--grpc.listen-address="127.0.0.1:$COORDINATOR_GRPC_PORT" \
	--storage.path="$DATA/coordinator"
wait_ready coordinator "$COORDINATOR_WEB_PORT" /-/ready

for i in "${!SCRAPER_PORTS[@]}"; do
	port=${SCRAPER_PORTS[$i]}
	start "scraper-$i" "$BIN/scraper" \
		--coordinator.address="127.0.0.1:$COORDINATOR_GRPC_PORT" \
		--worker.id="scraper-$i" \
		--web.listen-address="127.0.0.1:$port" \
		--web.external-address="127.0.0.1:$port" \
		--storage.path="$DATA/scraper-$i"
done
for i in "${!SCRAPER_PORTS[@]}"; do
	wait_ready "scraper-$i" "${SCRAPER_PORTS[$i]}" /-/ready
done

targets=$((NODES + NODES * PODS_PER_NODE))
query='count by (cluster_name) (up)'
encoded='count%20by%20%28cluster_name%29%20%28up%29'
shardctl=./bin/shardctl
[[ $COORDINATOR_GRPC_PORT == 9094 ]] || shardctl+=" --coordinator.address=127.0.0.1:$COORDINATOR_GRPC_PORT"
cat <<EOF

The pipeline is up: $NODES node_exporters and $((NODES * PODS_PER_NODE)) application pods ($targets targets)
scraped by ${#SCRAPER_PORTS[@]} scrapers into VictoriaMetrics, labelled cluster_name="local".

  $query (expect $targets within a minute):
    http://127.0.0.1:$VM_PORT/vmui/?#/?g0.expr=$encoded
    http://127.0.0.1:$VM_PORT/api/v1/query?query=$encoded
  the fleet's targets and their owners:
    http://127.0.0.1:$COORDINATOR_WEB_PORT/api/v1/targets
  the workers:
    $shardctl workers

Consul and Kubernetes APIs (fleetsim): http://127.0.0.1:$FLEETSIM_PORT; targets: node_exporters at
127.1.x.y:$NODE_PORT, pods at 127.16.x.y:$POD_PORT (e.g. http://127.1.0.1:$NODE_PORT/metrics). Logs: ${LOGS#"$ROOT"/}/*.log.
Press Ctrl-C to stop.
EOF

# Run until a signal (the traps) or until any child exits.
while :; do
	died=
	if wait -n -p died; then rc=0; else rc=$?; fi
	if [[ -z $died ]]; then
		# 127: no child left to wait for (none of ours should be gone
		# unnoticed, but spinning here would hide it); else a signal, whose
		# trap exits.
		((rc != 127)) || die "no child process left to wait for"
		continue
	fi
	for name in "${NAMES[@]}"; do
		if [[ ${PIDS[$name]:-} == "$died" ]]; then
			unset "PIDS[$name]"
			echo "run.sh: $name (pid $died) exited with status $rc; the end of ${LOGFILE[$name]}:" >&2
			tail -n 20 "${LOGFILE[$name]}" >&2 || true
			exit 1
		fi
	done
done
