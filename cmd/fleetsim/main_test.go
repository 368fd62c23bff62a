package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oklog/run"
	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testenv.FreeAddr()
	require.NoError(t, err)
	return addr
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRunServesAndStops(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr testenv.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runMain(ctx, []string{"--web.listen-address=" + addr, "--nodes=2", "--pods-per-node=2", "--node.port=0", "--pod.port=0", "--node.series=200", "--consul.datacenter=east"}, io.Discard, &stderr)
	}()
	require.Eventually(t, func() bool { code, _ := get("http://" + addr + "/-/ready"); return code == http.StatusOK }, 15*time.Second, 20*time.Millisecond)

	code, body := get("http://" + addr + "/v1/catalog/service/node-exporter")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `"Datacenter":"east"`)
	require.Contains(t, body, `"ServiceAddress":"127.1.0.2"`)
	code, body = get("http://" + addr + "/api/v1/namespaces/apps/pods")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `"podIP":"127.16.0.4"`)
	code, body = get("http://" + addr + "/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "shardscrape_fleet_scrapes_served_total")
	require.Contains(t, stderr.String(), `msg="Fleet is up" consul_api=`+addr)

	// The targets named in the log answer.
	var port string
	for _, f := range strings.Fields(stderr.String()) {
		if v, ok := strings.CutPrefix(f, "node_port="); ok {
			port = v
		}
	}
	require.NotEmpty(t, port)
	code, body = get(fmt.Sprintf("http://127.1.0.2:%s/metrics", port))
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "node_cpu_seconds_total")

	cancel()
	select {
	case rc := <-done:
		require.Equal(t, 0, rc, stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatal("fleetsim did not stop")
	}
	_, err := net.Dial("tcp", addr)
	require.Error(t, err, "nothing listens after exit")
}

func TestPortTakenNamesTheFlag(t *testing.T) {
	// A listener on 127.0.0.1:P makes fleetsim's 0.0.0.0:P bind fail.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, flag := range []string{"node.port", "pod.port"} {
		var stderr testenv.SyncBuffer
		other := "--pod.port=0"
		if flag == "pod.port" {
			other = "--node.port=0"
		}
		rc := runMain(context.Background(), []string{"--web.listen-address=" + freeAddr(t), "--nodes=1", fmt.Sprintf("--%s=%d", flag, port), other}, io.Discard, &stderr)
		require.Equal(t, 1, rc)
		require.Contains(t, stderr.String(), fmt.Sprintf("--%s=%d", flag, port))
		require.Contains(t, stderr.String(), "address already in use")
	}

	var stderr testenv.SyncBuffer
	rc := runMain(context.Background(), []string{"--web.listen-address=" + ln.Addr().String(), "--nodes=1", "--node.port=0", "--pod.port=0"}, io.Discard, &stderr)
	require.Equal(t, 1, rc)
	require.Contains(t, stderr.String(), "--web.listen-address="+ln.Addr().String())
}

func TestBadFlags(t *testing.T) {
	var stderr testenv.SyncBuffer
	require.Equal(t, 1, runMain(context.Background(), []string{"--nodes=0"}, io.Discard, &stderr))
	require.Contains(t, stderr.String(), "nodes 0")
	require.Equal(t, 2, runMain(context.Background(), []string{"--nodes=x"}, io.Discard, &stderr))
}

type fakeFleet struct {
	done chan struct{}
	err  error
}

func (f *fakeFleet) Done() <-chan struct{} { return f.done }
func (f *fakeFleet) Err() error            { return f.err }

// TestTargetFailureEndsTheRun: the targets' actor ends the run group when
// the fleet stops serving, with the fleet's error, and returns nil when
// the group stops it.
func TestTargetFailureEndsTheRun(t *testing.T) {
	f := &fakeFleet{done: make(chan struct{}), err: errors.New("accept tcp4 0.0.0.0:9100: use of closed network connection")}
	var g run.Group
	stop := make(chan struct{})
	g.Add(func() error { return watchTargets(f, stop) }, func(error) { close(stop) })
	other := make(chan struct{})
	g.Add(func() error { <-other; return nil }, func(error) { close(other) })
	res := make(chan error, 1)
	go func() { res <- g.Run() }()
	select {
	case err := <-res:
		t.Fatalf("the group ended before the targets failed: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(f.done)
	select {
	case err := <-res:
		require.ErrorContains(t, err, "targets: accept tcp4 0.0.0.0:9100: use of closed network connection")
	case <-time.After(10 * time.Second):
		t.Fatal("a target failure did not end the run")
	}

	// Closed without an error: still the end of the run.
	closed := &fakeFleet{done: make(chan struct{})}
	close(closed.done)
	require.ErrorContains(t, watchTargets(closed, make(chan struct{})), "no longer served")
	// Stopped by the group: nil.
	stopped := make(chan struct{})
	close(stopped)
	require.NoError(t, watchTargets(&fakeFleet{done: make(chan struct{})}, stopped))
}
