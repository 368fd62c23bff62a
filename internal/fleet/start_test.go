package fleet

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

// lockedBuffer is a log sink for one test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func status(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, err := io.ReadAll(rec.Result().Body)
	require.NoError(t, err)
	return rec.Code, string(b)
}

// TestRegisterFailureUndone: a Start whose registration fails half way
// leaves neither Consul nor Kubernetes entries nor a bound port behind, and
// a later Start succeeds.
func TestRegisterFailureUndone(t *testing.T) {
	f, err := New(Options{Nodes: 3, PodsPerNode: 1, NodeSeries: 10, PodSeries: 10})
	require.NoError(t, err)
	h := f.Handler()
	node := f.pods[2].Node
	f.pods[2].Node = "no-such-node" // the Consul fake refuses a service on it
	err = f.Start()
	require.ErrorContains(t, err, "register pod app-0-2 in consul")
	code, body := status(t, h, "/v1/catalog/nodes")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, "[]", body, "the nodes registered before the failure are gone")
	require.Zero(t, f.Kube().Len(&corev1.Node{}))
	require.Zero(t, f.Kube().Len(&corev1.Pod{}))
	require.Zero(t, f.NodePort())
	require.Empty(t, f.Nodes()[0].Addr)
	code, _ = status(t, h, "/-/ready")
	require.Equal(t, http.StatusServiceUnavailable, code)

	f.pods[2].Node = node
	require.NoError(t, f.Start(), "Start again after a failed one")
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	code, _ = status(t, h, "/-/ready")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 3, f.Kube().Len(&corev1.Pod{}))
	code, body = status(t, h, "/v1/catalog/service/app")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, f.Pods()[2].IP)
	resp, err := http.Get("http://" + f.Pods()[2].Addr + MetricsPath)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestListenerFailureEndsServing: a target listener failing under the
// fleet stops every target, closes Done, and Err and Close say why.
func TestListenerFailureEndsServing(t *testing.T) {
	f, err := New(Options{Nodes: 2, PodsPerNode: 1, NodeSeries: 10, PodSeries: 10})
	require.NoError(t, err)
	require.NoError(t, f.Start())
	h := f.Handler()
	select {
	case <-f.Done():
		t.Fatal("Done closed while serving")
	default:
	}
	require.NoError(t, f.Err())

	require.NoError(t, f.listeners[0].Close()) // the node listener fails under its server
	select {
	case <-f.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Done not closed after a listener failed")
	}
	require.ErrorContains(t, f.Err(), "serve targets on 0.0.0.0:")
	code, _ := status(t, h, "/-/ready")
	require.Equal(t, http.StatusServiceUnavailable, code)
	// The other listener stopped too.
	_, err = net.DialTimeout("tcp4", f.Pods()[0].Addr, 5*time.Second)
	require.Error(t, err, "the pod listener is closed as well")
	require.ErrorContains(t, f.Close(), "serve targets on")
}

// TestDeviceBindRefusedWarns: without the loopback device binding, Start
// warns that the ports are reachable from other hosts.
func TestDeviceBindRefusedWarns(t *testing.T) {
	var logs lockedBuffer
	f, err := New(Options{Nodes: 1, NodeSeries: 10, Logger: slogTo(&logs)})
	require.NoError(t, err)
	f.listen = func(port int) (net.Listener, bool, error) {
		ln, _, err := listen(port)
		return ln, false, err
	}
	require.NoError(t, f.Start())
	defer func() { require.NoError(t, f.Close()) }()
	require.Contains(t, logs.String(), "level=WARN")
	require.Contains(t, logs.String(), "other hosts can complete a TCP handshake")

	var quiet lockedBuffer
	g, err := New(Options{Nodes: 1, NodeSeries: 10, Logger: slogTo(&quiet)})
	require.NoError(t, err)
	g.listen = func(port int) (net.Listener, bool, error) {
		ln, _, err := listen(port)
		return ln, true, err
	}
	require.NoError(t, g.Start())
	defer func() { require.NoError(t, g.Close()) }()
	require.NotContains(t, quiet.String(), "level=WARN")
}

func TestCloseBeforeStart(t *testing.T) {
	f, err := New(Options{Nodes: 1})
	require.NoError(t, err)
	require.NoError(t, f.Close())
	select {
	case <-f.Done():
	default:
		t.Fatal("Done open after Close")
	}
	require.ErrorContains(t, f.Start(), "fleet closed")
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
