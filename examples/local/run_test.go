// Package local_test checks examples/local: its prometheus.yml loads (in
// Prometheus and in the coordinator's --config.check) and run.sh brings the
// whole pipeline up, reports where to look, and stops exactly what it
// started, all of it from a temporary copy on free ports (skipped under
// -short).
package local_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/config"
	promconsul "github.com/prometheus/prometheus/discovery/consul"
	promk8s "github.com/prometheus/prometheus/discovery/kubernetes"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

func TestConfigLoads(t *testing.T) {
	cfg, err := config.LoadFile("prometheus.yml", false, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Len(t, cfg.ScrapeConfigs, 2)

	nodes := cfg.ScrapeConfigs[0]
	require.Equal(t, "node-exporter", nodes.JobName)
	require.Len(t, nodes.ServiceDiscoveryConfigs, 1)
	c, ok := nodes.ServiceDiscoveryConfigs[0].(*promconsul.SDConfig)
	require.True(t, ok)
	require.Equal(t, "127.0.0.1:8500", c.Server)
	require.Equal(t, []string{"node-exporter"}, c.Services)

	pods := cfg.ScrapeConfigs[1]
	require.Equal(t, "kubernetes-pods", pods.JobName)
	k, ok := pods.ServiceDiscoveryConfigs[0].(*promk8s.SDConfig)
	require.True(t, ok)
	require.Equal(t, promk8s.RolePod, k.Role)
	require.Equal(t, "http://127.0.0.1:8500", k.APIServer.String())

	require.Len(t, cfg.RemoteWriteConfigs, 1)
	require.Equal(t, "http://127.0.0.1:8428/api/v1/write", cfg.RemoteWriteConfigs[0].URL.String())
}

// binaries builds the four commands run.sh starts into dir/bin and links
// VictoriaMetrics beside them.
func binaries(t *testing.T, dir string) {
	t.Helper()
	vm := testenv.Binary(t, testenv.VictoriaMetricsBinary)
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	require.NoError(t, testenv.BuildCommands(bin, "coordinator", "scraper", "shardctl", "fleetsim"))
	require.NoError(t, os.Symlink(vm, filepath.Join(bin, testenv.VictoriaMetricsBinary)))
}

// freePorts returns n distinct ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	seen := map[int]bool{}
	var ports []int
	for len(ports) < n {
		addr, err := testenv.FreeAddr()
		require.NoError(t, err)
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if !seen[port] {
			seen[port] = true
			ports = append(ports, port)
		}
	}
	return ports
}

// layout is a temporary copy of the repository's run.sh with its own
// ports and config.
type layout struct {
	dir   string
	ports map[string]int
	env   []string
	// kids are the script's children (pid → comm) once recorded: if the
	// script hangs, killing it would orphan them (each has a process group
	// of its own), so the cleanup kills them too.
	kids map[int]string
}

func newLayout(t *testing.T, dir string) *layout {
	t.Helper()
	script, err := os.ReadFile("run.sh")
	require.NoError(t, err)
	ex := filepath.Join(dir, "examples", "local")
	require.NoError(t, os.MkdirAll(ex, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(ex, "run.sh"), script, 0o755))

	// The fleet's target ports are left to their default: free ones.
	p := freePorts(t, 7)
	l := &layout{dir: dir, kids: map[int]string{}, ports: map[string]int{
		"VM_PORT": p[0], "FLEETSIM_PORT": p[1],
		"COORDINATOR_WEB_PORT": p[2], "COORDINATOR_GRPC_PORT": p[3],
	}}
	cfg, err := os.ReadFile("prometheus.yml")
	require.NoError(t, err)
	s := strings.NewReplacer(
		"127.0.0.1:8500", fmt.Sprintf("127.0.0.1:%d", p[1]),
		"127.0.0.1:8428", fmt.Sprintf("127.0.0.1:%d", p[0]),
		"scrape_interval: 15s", "scrape_interval: 1s",
		"scrape_timeout: 10s", "scrape_timeout: 1s",
	).Replace(string(cfg))
	require.Contains(t, s, "scrape_interval: 1s")
	cfgPath := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(s), 0o644))
	l.env = append(os.Environ(), "CONFIG="+cfgPath, "READY_TIMEOUT=120", "STOP_TIMEOUT=60",
		fmt.Sprintf("SCRAPER_PORTS=%d %d %d", p[4], p[5], p[6]))
	for k, v := range l.ports {
		l.env = append(l.env, fmt.Sprintf("%s=%d", k, v))
	}
	return l
}

// start runs the copy of run.sh in a process group of its own, as make
// does in a terminal.
func (l *layout) start(t *testing.T, env ...string) (*exec.Cmd, *testenv.SyncBuffer, <-chan error) {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join(l.dir, "examples", "local", "run.sh"))
	cmd.Env = append(append([]string(nil), l.env...), env...)
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		close(exited)
		done <- err
	}()
	t.Cleanup(func() {
		// Only when the test failed before it stopped: the script stops its
		// children on SIGTERM.
		select {
		case <-exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(90 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		// Whatever the script left running of what it started (it hung,
		// or was killed): by pid, checked against the command recorded.
		for pid, comm := range l.kids {
			if alive(pid) && procComm(pid) == comm {
				t.Logf("killing %s (pid %d), left running by run.sh", comm, pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			t.Logf("run.sh output:\n%s", out.String())
			for _, name := range []string{"victoria-metrics", "fleetsim", "coordinator", "scraper-0", "scraper-1", "scraper-2"} {
				b, _ := os.ReadFile(filepath.Join(l.dir, "data", "run", "logs", name+".log"))
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("%s.log (tail):\n%s", name, b)
			}
		}
	})
	return cmd, out, done
}

// children returns the pids whose parent is pid.
func children(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// record returns the script's children and remembers them for the cleanup.
func (l *layout) record(t *testing.T, pid int) []int {
	t.Helper()
	kids := children(t, pid)
	for _, k := range kids {
		l.kids[k] = procComm(k)
	}
	return kids
}

func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

func query(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", fmt.Errorf("%w: %s", err, b)
	}
	var parts []string
	for _, res := range r.Data.Result {
		parts = append(parts, fmt.Sprintf("%s=%v", res.Metric["cluster_name"], res.Value[1]))
	}
	return strings.Join(parts, ","), nil
}

func TestRunScript(t *testing.T) {
	if testing.Short() {
		t.Skip("starts VictoriaMetrics, fleetsim, a coordinator and three scrapers")
	}
	dir := t.TempDir()
	binaries(t, dir)

	t.Run("config check", func(t *testing.T) {
		out, err := exec.Command(filepath.Join(dir, "bin", "coordinator"), "--config.file=prometheus.yml", "--config.check", "--cluster.name=local").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), "SUCCESS")
	})

	t.Run("port taken", func(t *testing.T) {
		l := newLayout(t, dir)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", l.ports["COORDINATOR_GRPC_PORT"]))
		require.NoError(t, err)
		defer ln.Close()
		_, out, done := l.start(t)
		select {
		case err := <-done:
			require.Error(t, err)
			require.Contains(t, out.String(), fmt.Sprintf("port %d is taken (needed by coordinator --grpc.listen-address)", l.ports["COORDINATOR_GRPC_PORT"]))
		case <-time.After(30 * time.Second):
			t.Fatal("run.sh did not refuse a taken port")
		}
	})

	t.Run("up, query, shardctl, Ctrl-C", func(t *testing.T) {
		l := newLayout(t, dir)
		cmd, out, done := l.start(t, "NODES=4", "PODS_PER_NODE=2")
		waitFor(t, done, out, "Press Ctrl-C to stop.", 4*time.Minute)
		m := regexp.MustCompile(`http://127\.0\.0\.1:\d+/api/v1/query\?query=\S+`).FindString(out.String())
		require.NotEmpty(t, m, out.String())
		require.Contains(t, out.String(), "(expect 12 within a minute)")

		kids := l.record(t, cmd.Process.Pid)
		require.Len(t, kids, 6, "VictoriaMetrics, fleetsim, coordinator, three scrapers")
		// The target ports fleetsim picked, as the script reports them.
		tp := regexp.MustCompile(`node_exporters at\s+127\.1\.x\.y:(\d+), pods at 127\.16\.x\.y:(\d+)`).FindStringSubmatch(out.String())
		require.Len(t, tp, 3, out.String())
		for _, p := range tp[1:] {
			require.NotEqual(t, "0", p)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// Every target counted, and every one of them up (the printed
		// query counts up == 0 too).
		upOK := "http://" + regexp.MustCompile(`^http://([^/]+)/`).FindStringSubmatch(m)[1] + "/api/v1/query?query=" +
			url.QueryEscape("count by (cluster_name) (up == 1)")
		var got, gotUp string
		require.Eventually(t, func() bool {
			got, _ = query(ctx, m)
			gotUp, _ = query(ctx, upOK)
			return got == "local=12" && gotUp == "local=12"
		}, 2*time.Minute, 500*time.Millisecond, "count by (cluster_name) (up): %s; (up == 1): %s", got, gotUp)

		sc := regexp.MustCompile(`\./bin/shardctl[^\n]* workers`).FindString(out.String())
		require.NotEmpty(t, sc)
		args := strings.Fields(strings.TrimPrefix(sc, "./bin/shardctl"))
		res, err := exec.Command(filepath.Join(dir, "bin", "shardctl"), args...).CombinedOutput()
		require.NoError(t, err, "%s", res)
		for i := range 3 {
			require.Regexp(t, fmt.Sprintf(`(?m)^scraper-%d\s+active`, i), string(res))
		}

		// Ctrl-C: SIGINT to the script's process group, as a terminal does;
		// the children have groups of their own.
		require.NoError(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGINT))
		select {
		case <-done:
		case <-time.After(3 * time.Minute):
			t.Fatal("run.sh did not stop on SIGINT")
		}
		require.Contains(t, out.String(), "Stopping: scrapers first")
		require.Contains(t, out.String(), "Stopped.")
		require.NotContains(t, out.String(), "killing it", "every child stopped on SIGTERM")
		for _, pid := range kids {
			require.False(t, alive(pid), "child %d still running", pid)
		}
		for name, port := range l.ports {
			_, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			require.Error(t, err, "%s %d still listening", name, port)
		}
		for _, port := range tp[1:] {
			// Wildcard on lo: dial a target's loopback address.
			_, err := net.DialTimeout("tcp", "127.1.0.1:"+port, time.Second)
			require.Error(t, err, "target port %s still listening", port)
		}
		// The scrapers stopped before the coordinator, VictoriaMetrics last.
		var order []string
		for _, line := range strings.Split(out.String(), "\n") {
			if name, ok := strings.CutSuffix(strings.TrimSpace(line), " stopped"); ok {
				order = append(order, name)
			}
		}
		require.Len(t, order, 6, out.String())
		require.ElementsMatch(t, []string{"scraper-0", "scraper-1", "scraper-2"}, order[:3])
		require.Equal(t, []string{"coordinator", "fleetsim", "victoria-metrics"}, order[3:])
	})

	t.Run("a child dies", func(t *testing.T) {
		l := newLayout(t, dir)
		cmd, out, done := l.start(t, "NODES=1", "PODS_PER_NODE=1")
		waitFor(t, done, out, "Press Ctrl-C to stop.", 4*time.Minute)
		kids := l.record(t, cmd.Process.Pid)
		var fleetsim int
		for _, pid := range kids {
			if l.kids[pid] == "fleetsim" {
				fleetsim = pid
			}
		}
		require.NotZero(t, fleetsim)
		require.NoError(t, syscall.Kill(fleetsim, syscall.SIGKILL))
		select {
		case err := <-done:
			require.Error(t, err, "a dead child fails the run")
		case <-time.After(3 * time.Minute):
			t.Fatal("run.sh did not stop when fleetsim died")
		}
		require.Contains(t, out.String(), fmt.Sprintf("fleetsim (pid %d) exited with status 137", fleetsim))
		require.Contains(t, out.String(), "Stopped.")
		for _, pid := range kids {
			require.False(t, alive(pid), "child %d still running", pid)
		}
	})
}

// waitFor waits until out contains s, failing if the script exits first.
func waitFor(t *testing.T, done <-chan error, out *testenv.SyncBuffer, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(out.String(), s) {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("run.sh exited (%v) before printing %q:\n%s", err, s, out.String())
		case <-deadline:
			t.Fatalf("run.sh did not print %q within %v:\n%s", s, timeout, out.String())
		case <-tick.C:
		}
	}
}
