package main

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestBinarySignals runs the compiled binary: SIGHUP reloads (an invalid
// file is rejected and the old configuration stays), SIGTERM stops it
// with exit code 0.
func TestBinarySignals(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "coordinator")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	cfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfg, "scrape_configs:\n- job_name: old\n  static_configs: [{targets: ['10.0.0.1:9100']}]\n")
	var logs syncBuffer
	cmd := exec.Command(bin, "--config.file="+cfg, "--web.listen-address=127.0.0.1:0", "--grpc.listen-address=127.0.0.1:0",
		"--storage.path="+filepath.Join(dir, "data"), "--discovery.update-interval=100ms")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	// The web address from the start-up log line.
	webRe := regexp.MustCompile(`msg="Coordinator started" web=(\S+)`)
	var web string
	require.Eventually(t, func() bool {
		m := webRe.FindStringSubmatch(logs.String())
		if m == nil {
			return false
		}
		web = "http://" + m[1]
		return true
	}, 60*time.Second, 20*time.Millisecond, "%s", &logs)
	in := &instance{web: web}
	in.waitReady(t)
	require.Eventually(t, func() bool { return len(in.jobs(t)["old"]) == 1 }, 30*time.Second, 20*time.Millisecond)

	writeFile(t, cfg, "scrape_configs:\n- job_name: new\n  scrape_intervall: 1s\n")
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool {
		return in.metric(t, "shardscrape_coordinator_config_reload_failures_total") == "1"
	}, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, "0", in.metric(t, "shardscrape_coordinator_config_last_reload_successful"))
	require.Contains(t, in.jobs(t), "old")
	require.Contains(t, logs.String(), "scrape_intervall")

	writeFile(t, cfg, "scrape_configs:\n- job_name: new\n  static_configs: [{targets: ['10.0.0.2:9100']}]\n")
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool {
		jobs := in.jobs(t)
		_, old := jobs["old"]
		return len(jobs["new"]) == 1 && !old
	}, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, "1", in.metric(t, "shardscrape_coordinator_config_last_reload_successful"))

	before := len(logs.String())
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "%s", &logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("no exit after SIGTERM:\n%s", &logs)
	}
	tail := logs.String()[before:]
	require.Contains(t, tail, `msg="Coordinator stopped"`)
	sc := bufio.NewScanner(strings.NewReader(tail))
	for sc.Scan() {
		require.NotContains(t, sc.Text(), "level=ERROR", "errors logged on the way out")
	}
}
