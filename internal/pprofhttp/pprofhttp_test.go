package pprofhttp

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRegister(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get("/debug/pprof/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "heap")
	code, body = get("/debug/pprof/goroutine?debug=1")
	require.Equal(t, http.StatusOK, code)
	require.True(t, strings.HasPrefix(body, "goroutine profile:"), body[:min(len(body), 80)])
	code, _ = get("/debug/pprof/cmdline")
	require.Equal(t, http.StatusOK, code)
	resp, err := http.Post(srv.URL+"/debug/pprof/symbol", "text/plain", strings.NewReader("0x0"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
