package fleet

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler is the fleet's control handler: the Consul HTTP API under /v1/,
// the Kubernetes API under /api, /apis and /version, /-/ready (200 once
// Start returned, until Close), /-/healthy, and /metrics when the
// Registerer is also a Gatherer.
func (f *Fleet) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/", f.consul)
	for _, p := range []string{"/api", "/api/", "/apis", "/apis/", "/version", "/healthz", "/readyz", "/livez"} {
		mux.Handle(p, f.kube)
	}
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("Fleet is Healthy.\n"))
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		ready := f.ready
		f.mu.Unlock()
		if !ready {
			http.Error(w, "Fleet is not ready: targets are not listening.", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("Fleet is Ready.\n"))
	})
	if g, ok := f.opts.Registerer.(prometheus.Gatherer); ok {
		mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{Registry: f.opts.Registerer}))
	}
	return mux
}
