package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// stopTimeout bounds a SIGTERM (a remote-write flush included) before
// SIGKILL.
const stopTimeout = 90 * time.Second

// proc is one child process this program started. It is stopped by its
// pid only.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once exited
	mu      sync.Mutex
	state   *os.ProcessState
	err     error
}

// procs tracks every started process so that one deferred call stops them
// all, whatever ends the run.
type procs struct {
	mu   sync.Mutex
	list []*proc
}

// start runs path with args, its output in logPath. The child gets its own
// process group (a ^C reaches this program, which stops it by pid) and
// SIGKILL when this program dies without stopping it.
func (ps *procs) start(name, logPath, path string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	fmt.Fprintf(logf, "==> %s %q\n", path, args)
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.state, p.err = cmd.ProcessState, err
		p.mu.Unlock()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// killAll sends SIGKILL to every process still running, by pid, and does
// not wait (the second ^C).
func (ps *procs) killAll() {
	ps.mu.Lock()
	list := append([]*proc(nil), ps.list...)
	ps.mu.Unlock()
	for _, p := range list {
		if p.running() {
			_ = p.cmd.Process.Kill()
		}
	}
}

// stopAll stops every process still running, newest first.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	list := append([]*proc(nil), ps.list...)
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		_ = list[i].stop()
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the pid and waits; SIGKILL after stopTimeout.
func (p *proc) stop() error {
	if !p.running() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s (pid %d) still running %s after SIGTERM: killed", p.name, p.pid(), stopTimeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return fmt.Errorf("%s (pid %d) exited: %w%s", p.name, p.pid(), p.err, p.logTail())
	}
	return p.err
}

// logTail is the end of the process's output (the temp dir holding the
// log is gone once the run ends, so errors carry it).
func (p *proc) logTail() string {
	const n = 2048
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return "\n--- last output of " + p.name + " ---\n" + string(b)
}

// usage reads the running process's CPU time and memory from /proc.
func (p *proc) usage() (testenv.Usage, error) {
	return testenv.ProcUsage(p.pid())
}

// exitUsage is the exited process's CPU time and peak RSS from its rusage.
func (p *proc) exitUsage() (testenv.Usage, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == nil {
		return testenv.Usage{}, fmt.Errorf("%s: not exited", p.name)
	}
	u := testenv.Usage{CPU: p.state.UserTime() + p.state.SystemTime()}
	if ru, ok := p.state.SysUsage().(*syscall.Rusage); ok {
		u.PeakRSSBytes = uint64(ru.Maxrss) * 1024 // KiB on Linux
	}
	return u, nil
}

// waitReady polls url until it answers 200, the process exits, ctx ends
// (^C) or timeout.
func (p *proc) waitReady(ctx context.Context, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("waiting for %s at %s: %w", p.name, url, err)
		}
		var resp *http.Response
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err == nil {
			resp, err = client.Do(req)
		}
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !p.running() {
			return fmt.Errorf("%s exited before %s answered 200%s", p.name, url, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s after %s%s", p.name, url, timeout, p.logTail())
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// binary checks that path is an executable file.
func binary(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("binary %s: %w (make receivers; go build -o bin/ ./cmd/...)", path, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("binary %s: not an executable file", path)
	}
	return abs, nil
}
