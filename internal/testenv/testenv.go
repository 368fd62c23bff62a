// Package testenv runs the real components tests, end-to-end tests and
// benchmarks need: VictoriaMetrics single-node, Prometheus as a remote-write
// receiver and Prometheus in agent mode. `make receivers` installs them at
// pinned versions into the module's ./bin; this package finds them there (or
// in $SHARDSCRAPE_BIN), starts them on free 127.0.0.1 ports with their data in
// t.TempDir(), waits until they are ready, and stops them again, by pid, when
// the test ends.
//
// A missing binary skips the test under -short and fails it otherwise: CI
// must never pass by silently not running what it claims to.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvBin names the environment variable that overrides where the binaries
// are looked up. The Makefile exports it as its ./bin.
const EnvBin = "SHARDSCRAPE_BIN"

// Names of the binaries `make receivers` installs.
const (
	VictoriaMetricsBinary = "victoria-metrics"
	VMAgentBinary         = "vmagent"
	PrometheusBinary      = "prometheus"
)

// Timeouts for a process becoming ready and for a SIGTERM to end it. Both are
// generous upper bounds for a shared two-core machine, not expectations.
const (
	ReadyTimeout = 90 * time.Second
	StopTimeout  = 60 * time.Second
)

// ModuleRoot returns the directory holding this module's go.mod, found by
// walking up from the working directory (a test runs in its package's
// directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod in %q or any parent", dir)
		}
		d = parent
	}
}

// BinDir returns the directory holding the real binaries: $SHARDSCRAPE_BIN
// when set, else <module root>/bin.
func BinDir() (string, error) {
	if d := os.Getenv(EnvBin); d != "" {
		return d, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin"), nil
}

// Binary returns the path of the named binary in BinDir. When it is missing
// the test is skipped under -short and fails otherwise, naming the Makefile
// target that installs it.
func Binary(t testing.TB, name string) string {
	t.Helper()
	dir, err := BinDir()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	path := filepath.Join(dir, name)
	fi, err := os.Stat(path)
	if err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return path
	}
	msg := fmt.Sprintf("testenv: %s not found at %s: run `make tools` (installs VictoriaMetrics, vmagent, Prometheus and kustomize into ./bin)", name, path)
	if testing.Short() {
		t.Skip(msg)
		return ""
	}
	t.Fatal(msg)
	return ""
}

// FreeAddr returns a 127.0.0.1:port address that was free a moment ago. A
// process started on it may still lose a race for the port; the Start
// functions of this package retry on a fresh one when that happens.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	return addr, nil
}

// Process is one child process a test started. Start and Stop may be called
// repeatedly (same binary, arguments and data): a receiver outage is a Stop
// followed by a Start. The test's cleanup stops it if it is still running and,
// when the test failed, logs the tail of its output.
type Process struct {
	t    testing.TB
	name string
	path string
	args []string
	logs *logBuffer

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{} // closed when the current cmd has exited
	state *os.ProcessState
	err   error // from the last Wait
}

// NewProcess prepares (does not start) path with args and registers the
// cleanup that stops it.
func NewProcess(t testing.TB, path string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, name: filepath.Base(path), path: path, args: args, logs: &logBuffer{}}
	t.Cleanup(func() {
		if p.Running() {
			if err := p.Stop(); err != nil {
				t.Logf("testenv: stop %s: %v", p.name, err)
			}
		}
		if t.Failed() {
			t.Logf("testenv: last output of %s %s:\n%s", p.name, strings.Join(p.args, " "), p.logs.tail(16<<10))
		}
	})
	return p
}

// Args returns the process's command-line arguments.
func (p *Process) Args() []string { return append([]string(nil), p.args...) }

// SetArgs replaces the arguments used by the next Start.
func (p *Process) SetArgs(args ...string) { p.args = args }

// Start starts the process. It returns an error when it is already running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("start %s: already running as pid %d", p.name, p.cmd.Process.Pid)
		}
	}
	cmd := exec.Command(p.path, p.args...)
	fmt.Fprintf(p.logs, "==> %s %s\n", p.name, strings.Join(p.args, " "))
	cmd.Stdout = p.logs
	cmd.Stderr = p.logs
	// Its own process group: a ^C to `go test` does not reach it before the
	// cleanup does, and the cleanup signals this pid only. Pdeathsig kills it
	// if the test binary dies without running cleanups (a -timeout panic),
	// so no receiver outlives its test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.path, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.state, p.err = cmd, done, nil, nil
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.state, p.err = cmd.ProcessState, err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Pid returns the pid of the running (or last) process, 0 before Start.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited returns a channel closed when the current process exits (nil before
// Start).
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Running reports whether the process has been started and not exited.
func (p *Process) Running() bool {
	done := p.Exited()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process this Process started, by pid.
func (p *Process) Signal(sig os.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil || !p.Running() {
		return fmt.Errorf("signal %s: not running", p.name)
	}
	return cmd.Process.Signal(sig)
}

// Stop sends SIGTERM and waits for the process to exit; after StopTimeout it
// sends SIGKILL. It returns the exit error (nil for exit status 0); stopping
// a process that is not running returns nil.
func (p *Process) Stop() error {
	return p.stop(syscall.SIGTERM, StopTimeout)
}

// Kill sends SIGKILL and waits for the exit: an unclean crash.
func (p *Process) Kill() error {
	err := p.stop(syscall.SIGKILL, StopTimeout)
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return nil // killed, as asked
	}
	return err
}

func (p *Process) stop(sig syscall.Signal, timeout time.Duration) error {
	if !p.Running() {
		return nil
	}
	done := p.Exited()
	if err := p.Signal(sig); err != nil && p.Running() {
		return err
	}
	select {
	case <-done:
	case <-time.After(timeout):
		_ = p.Signal(syscall.SIGKILL)
		<-done
		return fmt.Errorf("stop %s: still running %s after %s, killed", p.name, sig, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Wait waits for the process to exit (or ctx) and returns its exit error.
func (p *Process) Wait(ctx context.Context) error {
	done := p.Exited()
	if done == nil {
		return fmt.Errorf("wait %s: not started", p.name)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Logs returns the process's stdout and stderr so far, across restarts (the
// oldest output is dropped beyond a few MiB).
func (p *Process) Logs() string { return p.logs.String() }

// Usage reads the running process's CPU time and memory from /proc.
func (p *Process) Usage() (Usage, error) {
	if !p.Running() {
		return Usage{}, fmt.Errorf("usage of %s: not running", p.name)
	}
	return ProcUsage(p.Pid())
}

// ExitUsage returns the CPU time and peak RSS of the exited process from its
// rusage (exact, unlike a last /proc sample). RSSBytes is zero.
func (p *Process) ExitUsage() (Usage, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == nil {
		return Usage{}, fmt.Errorf("exit usage of %s: not exited", p.name)
	}
	u := Usage{CPU: p.state.UserTime() + p.state.SystemTime()}
	if ru, ok := p.state.SysUsage().(*syscall.Rusage); ok {
		u.PeakRSSBytes = uint64(ru.Maxrss) * 1024 // Linux reports KiB
	}
	return u, nil
}

// waitReady polls url until it answers 200, the process exits, or ctx ends.
func (p *Process) waitReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("ready check %q: %w", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.Exited():
			p.mu.Lock()
			exitErr := p.err
			p.mu.Unlock()
			return fmt.Errorf("%s exited before %s was ready (%v): %w", p.name, url, exitErr, errExited)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w", p.name, url, ctx.Err())
		case <-tick.C:
		}
	}
}

var errExited = errors.New("process exited")

// addrInUse reports whether the process's output says its port was taken.
func (p *Process) addrInUse() bool {
	return strings.Contains(p.logs.tail(8<<10), "address already in use")
}

// startOnFreePort picks a free address, builds the arguments with it, starts
// the process and waits for readyPath; it retries on a fresh port when the
// process lost the race for the first one.
func startOnFreePort(t testing.TB, path string, args func(addr string) []string, readyPath string) (*Process, string) {
	t.Helper()
	p := NewProcess(t, path)
	for attempt := 1; ; attempt++ {
		addr, err := FreeAddr()
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		p.SetArgs(args(addr)...)
		if err := p.Start(); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		err = p.waitReady(context.Background(), "http://"+addr+readyPath)
		if err == nil {
			return p, addr
		}
		if errors.Is(err, errExited) && p.addrInUse() && attempt < 5 {
			continue
		}
		t.Fatalf("testenv: %v\n%s", err, p.logs.tail(8<<10))
	}
}

// Usage is a process's CPU time and memory.
type Usage struct {
	CPU          time.Duration // user + system
	RSSBytes     uint64        // resident set now (VmRSS)
	PeakRSSBytes uint64        // peak resident set (VmHWM, or rusage maxrss after exit)
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// ProcUsage reads a running process's CPU time from /proc/<pid>/stat (utime
// + stime) and its current and peak RSS from /proc/<pid>/status (VmRSS,
// VmHWM). Children are not included.
func ProcUsage(pid int) (Usage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, fmt.Errorf("usage of pid %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return Usage{}, fmt.Errorf("usage of pid %d: malformed /proc/%d/stat", pid, pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	// fields[0] is field 3 (state): utime is field 14, stime field 15.
	if len(fields) < 13 {
		return Usage{}, fmt.Errorf("usage of pid %d: short /proc/%d/stat", pid, pid)
	}
	var ticks uint64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return Usage{}, fmt.Errorf("usage of pid %d: /proc/%d/stat time %q: %w", pid, pid, f, err)
		}
		ticks += v
	}
	u := Usage{CPU: time.Duration(ticks) * time.Second / clockTicks}

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Usage{}, fmt.Errorf("usage of pid %d: %w", pid, err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		key, rest, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return Usage{}, fmt.Errorf("usage of pid %d: /proc/%d/status %s %q: %w", pid, pid, key, rest, err)
		}
		if key == "VmRSS" {
			u.RSSBytes = kb * 1024
		} else {
			u.PeakRSSBytes = kb * 1024
		}
	}
	return u, nil
}

// logBuffer collects a process's output, safe for concurrent writers, and
// keeps the last maxLogBytes of it.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const maxLogBytes = 4 << 20

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - maxLogBytes; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) <= n {
		return string(b.buf)
	}
	return string(b.buf[len(b.buf)-n:])
}
