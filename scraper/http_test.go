package scraper

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// TestHandlerPprof: the worker's own mux serves Go's profiles under
// /debug/pprof/, as Prometheus does.
func TestHandlerPprof(t *testing.T) {
	dir := t.TempDir()
	w, err := New(standaloneOpts(filepath.Join(dir, "data"), filepath.Join(dir, "prometheus.yml")), nil, prometheus.NewRegistry())
	require.NoError(t, err)
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()

	get := func(method, path string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader("0x0"))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, body
	}

	code, body := get(http.MethodGet, "/debug/pprof/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(body), "goroutine")
	require.Contains(t, string(body), "heap")

	code, body = get(http.MethodGet, "/debug/pprof/heap?debug=1")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(body), "heap profile:")

	code, body = get(http.MethodGet, "/debug/pprof/goroutine?debug=1")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(body), "goroutine profile:")

	// A CPU profile is a gzip-compressed protobuf.
	code, body = get(http.MethodGet, "/debug/pprof/profile?seconds=1")
	require.Equal(t, http.StatusOK, code)
	require.True(t, bytes.HasPrefix(body, []byte{0x1f, 0x8b}), "CPU profile is not gzip: %q", body[:min(len(body), 32)])

	code, body = get(http.MethodGet, "/debug/pprof/cmdline")
	require.Equal(t, http.StatusOK, code)
	require.NotEmpty(t, body)

	code, body = get(http.MethodPost, "/debug/pprof/symbol")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(body), "num_symbols")

	code, _ = get(http.MethodGet, "/debug/pprof/trace?seconds=0.1")
	require.Equal(t, http.StatusOK, code)

	// Still the worker's API beside it.
	code, _ = get(http.MethodGet, "/-/healthy")
	require.Equal(t, http.StatusOK, code)
	code, _ = get(http.MethodGet, "/debug/pprof/nosuchprofile")
	require.Equal(t, http.StatusNotFound, code)
}
