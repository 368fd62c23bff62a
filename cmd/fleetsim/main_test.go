package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

type syncBuf struct {
	mtx sync.Mutex
	b   bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	return s.b.String()
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
	var stderr syncBuf
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
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, flag := range []string{"node.port", "pod.port"} {
		var stderr syncBuf
		other := "--pod.port=0"
		if flag == "pod.port" {
			other = "--node.port=0"
		}
		rc := runMain(context.Background(), []string{"--web.listen-address=" + freeAddr(t), "--nodes=1", fmt.Sprintf("--%s=%d", flag, port), other}, io.Discard, &stderr)
		require.Equal(t, 1, rc)
		require.Contains(t, stderr.String(), fmt.Sprintf("--%s=%d", flag, port))
		require.Contains(t, stderr.String(), "address already in use")
	}

	var stderr syncBuf
	rc := runMain(context.Background(), []string{"--web.listen-address=" + ln.Addr().String(), "--nodes=1", "--node.port=0", "--pod.port=0"}, io.Discard, &stderr)
	require.Equal(t, 1, rc)
	require.Contains(t, stderr.String(), "--web.listen-address="+ln.Addr().String())
}

func TestBadFlags(t *testing.T) {
	var stderr syncBuf
	require.Equal(t, 1, runMain(context.Background(), []string{"--nodes=0"}, io.Discard, &stderr))
	require.Contains(t, stderr.String(), "nodes 0")
	require.Equal(t, 2, runMain(context.Background(), []string{"--nodes=x"}, io.Discard, &stderr))
}
