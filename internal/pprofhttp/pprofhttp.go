// Package pprofhttp serves net/http/pprof's handlers on a binary's own mux,
// as Prometheus does.
package pprofhttp

import (
	"net/http"
	"net/http/pprof"
)

// Register mounts the profiling endpoints under /debug/pprof/ on mux: the
// index and every named profile (heap, allocs, goroutine, block, mutex,
// threadcreate), cmdline, a CPU profile (?seconds=N), symbol lookup and an
// execution trace. (net/http/pprof also registers them on
// http.DefaultServeMux, which our binaries never serve.)
func Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
