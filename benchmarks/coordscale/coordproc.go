package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// coordProc is the real coordinator binary running as a child process,
// on loopback ports, with its state in a temporary directory.
type coordProc struct {
	cmd      *exec.Cmd
	web      string // host:port
	grpc     string // host:port
	started  time.Time
	exited   chan struct{}
	exitErr  error
	logs     *tailBuffer
	logFile  *os.File
	mu       sync.Mutex
	syncs    []syncRecord // "Discovery update applied" debug lines
	stopOnce sync.Once
}

// syncRecord is one discovery update the coordinator applied, from its
// debug log: when its syncer received it (the line's time minus the
// duration it reports) and when it finished (relabeling and the core's
// UpdateTargets).
type syncRecord struct {
	received, applied time.Time
}

// coordOptions are the coordinator's flags the benchmark sets.
type coordOptions struct {
	bin            string // the coordinator binary
	configFile     string
	dir            string // --storage.path
	updateInterval time.Duration
	leaseTTL       time.Duration // 0: the coordinator's default
	// logFile, when set, receives a copy of the coordinator's output.
	logFile string
}

// startCoordinator starts the binary on free loopback ports with debug
// logging (one line per applied discovery update). It does not wait for
// readiness.
func startCoordinator(o coordOptions) (*coordProc, error) {
	web, err := testenv.FreeAddr()
	if err != nil {
		return nil, err
	}
	grpcAddr, err := testenv.FreeAddr()
	if err != nil {
		return nil, err
	}
	c := &coordProc{web: web, grpc: grpcAddr, exited: make(chan struct{}), logs: &tailBuffer{max: 64 << 10}}
	c.cmd = exec.Command(o.bin,
		"--config.file="+o.configFile,
		"--web.listen-address="+web,
		"--grpc.listen-address="+grpcAddr,
		"--storage.path="+filepath.Join(o.dir, "coordinator"),
		"--discovery.update-interval="+o.updateInterval.String(),
		"--log.level=debug",
	)
	if o.leaseTTL > 0 {
		c.cmd.Args = append(c.cmd.Args, "--lease.ttl="+o.leaseTTL.String())
	}
	// Its own process group: a terminal's Ctrl-C reaches the benchmark,
	// which stops the coordinator by pid. Pdeathsig kills it should the
	// benchmark die without stopping it (SIGKILL, a panic). Best effort:
	// Linux sends it when the thread that started the child exits, which
	// for a Go program can be before the process does (Go issue 27505).
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("coordinator stderr: %w", err)
	}
	c.cmd.Stdout = c.logs
	var out io.Reader = stderr
	if o.logFile != "" {
		f, err := os.Create(o.logFile)
		if err != nil {
			return nil, fmt.Errorf("coordinator log: %w", err)
		}
		c.logFile = f
		out = io.TeeReader(stderr, f)
	}
	c.started = time.Now()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.bin, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		c.scan(out)
	}()
	go func() {
		<-scanned
		c.exitErr = c.cmd.Wait()
		if c.logFile != nil {
			_ = c.logFile.Close()
		}
		close(c.exited)
	}()
	return c, nil
}

// scan keeps the log's tail and records the discovery update lines.
func (c *coordProc) scan(r io.Reader) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Bytes()
		_, _ = c.logs.Write(append(line, '\n'))
		if !strings.Contains(string(line), "Discovery update applied") {
			continue
		}
		if rec, ok := parseSyncLine(line); ok {
			c.mu.Lock()
			c.syncs = append(c.syncs, rec)
			c.mu.Unlock()
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// parseSyncLine reads time= and duration= of a logfmt line (neither
// value is quoted).
func parseSyncLine(line []byte) (syncRecord, bool) {
	var at time.Time
	var dur time.Duration
	var okT, okD bool
	for _, f := range strings.Fields(string(line)) {
		if v, ok := strings.CutPrefix(f, "time="); ok {
			t, err := time.Parse(time.RFC3339Nano, v)
			at, okT = t, err == nil
		} else if v, ok := strings.CutPrefix(f, "duration="); ok {
			d, err := time.ParseDuration(v)
			dur, okD = d, err == nil
		}
	}
	if !okT || !okD {
		return syncRecord{}, false
	}
	return syncRecord{received: at.Add(-dur), applied: at}, true
}

// syncRecords returns the discovery updates applied so far.
func (c *coordProc) syncRecords() []syncRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]syncRecord(nil), c.syncs...)
}

func (c *coordProc) pid() int { return c.cmd.Process.Pid }

// usage is the process's CPU time and peak RSS, from /proc.
func (c *coordProc) usage() (testenv.Usage, error) { return testenv.ProcUsage(c.pid()) }

// waitReady polls /-/ready every 50ms.
func (c *coordProc) waitReady(ctx context.Context, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.web+"/-/ready", nil)
		if err != nil {
			return time.Time{}, fmt.Errorf("coordinator ready: %w", err)
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now(), nil
			}
		}
		select {
		case <-c.exited:
			return time.Time{}, fmt.Errorf("coordinator exited before ready (%v):\n%s", c.exitErr, c.logs.tail(4<<10))
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("coordinator not ready within %s: %w\n%s", timeout, ctx.Err(), c.logs.tail(4<<10))
		case <-t.C:
		}
	}
}

// discovered reads the coordinator's targets_discovered gauge (targets
// before relabeling, summed over jobs).
func (c *coordProc) discovered(ctx context.Context) (float64, error) {
	v, _, err := c.metric(ctx, "shardscrape_coordinator_targets_discovered")
	return v, err
}

// delayedUpdates reads prometheus_sd_updates_delayed_total: the sends
// discovery.Manager dropped because the coordinator's syncer was busy,
// retried at its next tick (up to one --discovery.update-interval later).
func (c *coordProc) delayedUpdates(ctx context.Context) (float64, error) {
	v, ok, err := c.metric(ctx, metricDelayedUpdates)
	if err == nil && !ok {
		err = fmt.Errorf("coordinator /metrics: no %s", metricDelayedUpdates)
	}
	return v, err
}

// metricDelayedUpdates is discovery.Manager's delayed-send counter.
const metricDelayedUpdates = "prometheus_sd_updates_delayed_total"

// metric reads one metric from the coordinator's /metrics, summed over
// its series; ok is false when it has none.
func (c *coordProc) metric(ctx context.Context, name string) (float64, bool, error) {
	ms, err := testenv.Metrics(ctx, "http://"+c.web+"/metrics")
	if err != nil {
		return 0, false, fmt.Errorf("coordinator /metrics: %w", err)
	}
	v, ok := ms.Sum(name, nil)
	return v, ok, nil
}

// stop sends SIGTERM to the coordinator's pid, and SIGKILL after timeout.
func (c *coordProc) stop(timeout time.Duration) error {
	var err error
	c.stopOnce.Do(func() {
		select {
		case <-c.exited:
			return
		default:
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(timeout):
			_ = c.cmd.Process.Kill()
			<-c.exited
			err = fmt.Errorf("coordinator pid %d did not stop within %s: killed", c.pid(), timeout)
		}
	})
	return err
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*b.max {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > n {
		return string(b.buf[len(b.buf)-n:])
	}
	return string(b.buf)
}
