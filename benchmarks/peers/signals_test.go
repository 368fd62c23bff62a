package main

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/promslog"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// sleeper starts `sleep 60` as a tracked child.
func sleeper(t *testing.T, ps *procs) *proc {
	t.Helper()
	path, err := binary("/bin/sleep")
	if err != nil {
		t.Skip("no /bin/sleep")
	}
	p, err := ps.start("sleep", filepath.Join(t.TempDir(), "sleep.log"), path, "60")
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.stop() })
	return p
}

func TestStopSignals(t *testing.T) {
	require.ElementsMatch(t, []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}, stopSignals)
}

// TestWaitReadyCanceled: a ^C while a process is not ready yet ends the
// wait, not the ready timeout.
func TestWaitReadyCanceled(t *testing.T) {
	p := sleeper(t, &procs{})
	addr, err := testenv.FreeAddr() // nothing listens there
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.waitReady(ctx, "http://"+addr+"/ready", time.Hour) }()
	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(time.Minute):
		t.Fatal("waitReady did not return on cancel")
	}
	require.True(t, p.running(), "the process is left to the orderly stop")
}

// TestSecondSignal: the first signal cancels the run and leaves the
// children alone; the second kills them by pid, removes the temp dir and
// exits.
func TestSecondSignal(t *testing.T) {
	ps := &procs{}
	p := sleeper(t, ps)
	dir := filepath.Join(t.TempDir(), "bench-peers-x")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "steady"), 0o755))
	ab := &aborter{}
	ab.set(&bench{procs: ps, dir: dir})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	exited := make(chan struct{})
	done := make(chan struct{})
	go func() {
		handleSignals(sigs, make(chan struct{}), cancel, ab, promslog.NewNopLogger(), func() { close(exited) })
		close(done)
	}()

	sigs <- syscall.SIGHUP
	require.Eventually(t, func() bool { return ctx.Err() != nil }, time.Minute, 10*time.Millisecond, "first signal cancels")
	require.True(t, p.running(), "first signal: children stopped by the run, not killed")
	require.DirExists(t, dir)

	sigs <- os.Interrupt
	select {
	case <-exited:
	case <-time.After(time.Minute):
		t.Fatal("second signal did not exit")
	}
	<-done
	require.Eventually(t, func() bool { return !p.running() }, time.Minute, 10*time.Millisecond, "child killed")
	require.NoDirExists(t, dir)
}

// TestRunFinishedWithoutSignal: the handler returns once the run did, and
// cancels nothing.
func TestRunFinishedWithoutSignal(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	finished := make(chan struct{})
	close(finished)
	handleSignals(make(chan os.Signal), finished, cancel, &aborter{}, promslog.NewNopLogger(), func() { t.Fatal("exit") })
	require.NoError(t, ctx.Err())
	(*aborter)(nil).set(nil) // a nil aborter is allowed
	(&aborter{}).abort()     // nothing to abort
}
