package main

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"syscall"
)

// stopSignals end the run: the first cancels it (every process stopped by
// pid, the temp dir removed, as on any error); a second kills.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// aborter holds the running bench for a second signal.
type aborter struct {
	mu sync.Mutex
	b  *bench
}

// set records b (a nil aborter ignores it).
func (a *aborter) set(b *bench) {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.b = b
	a.mu.Unlock()
}

// abort sends SIGKILL to every child by pid and removes the temp dir,
// without waiting for anything.
func (a *aborter) abort() {
	a.mu.Lock()
	b := a.b
	a.mu.Unlock()
	if b == nil {
		return
	}
	b.procs.killAll()
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// handleSignals cancels the run on the first signal from sigs; on a second
// it aborts (SIGKILL the children, remove the temp dir) and calls exit. It
// returns once finished is closed (the run returned) without a second
// signal.
func handleSignals(sigs <-chan os.Signal, finished <-chan struct{}, cancel context.CancelFunc, ab *aborter, logger *slog.Logger, exit func()) {
	select {
	case <-finished:
		return
	case s := <-sigs:
		logger.Warn("Stopping: every process by pid, then the temp dir (a second signal kills)", "signal", s.String())
		cancel()
	}
	select {
	case <-finished:
	case s := <-sigs:
		logger.Error("Second signal: killing every child process and removing the temp dir", "signal", s.String())
		ab.abort()
		exit()
	}
}
