package scraper

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"

	"github.com/shardscrape/shardscrape/internal/pprofhttp"
)

// Handler serves the worker's HTTP API: /metrics (when the registerer
// given to New is also a prometheus.Gatherer), /-/ready, /-/healthy,
// /-/reload (POST, standalone mode), /api/v1/targets (the worker's own
// targets, in Prometheus's response shape) and /debug/pprof/ (Go's
// profiles, as Prometheus serves them).
func (w *Worker) Handler() http.Handler {
	mux := http.NewServeMux()
	pprofhttp.Register(mux)
	if g, ok := w.reg.(prometheus.Gatherer); ok {
		mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /-/healthy", func(rw http.ResponseWriter, _ *http.Request) {
		rw.WriteHeader(http.StatusOK)
		_, _ = rw.Write([]byte("Healthy.\n"))
	})
	mux.HandleFunc("GET /-/ready", func(rw http.ResponseWriter, _ *http.Request) {
		if !w.Ready() {
			http.Error(rw, "Not ready.", http.StatusServiceUnavailable)
			return
		}
		_, _ = rw.Write([]byte("Ready.\n"))
	})
	mux.HandleFunc("POST /-/reload", func(rw http.ResponseWriter, r *http.Request) {
		if err := w.Reload(r.Context()); err != nil {
			http.Error(rw, "failed to reload config: "+err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = rw.Write([]byte("Reloaded.\n"))
	})
	mux.HandleFunc("GET /api/v1/targets", w.serveTargets)
	return mux
}

// Target is one element of activeTargets in /api/v1/targets, as
// Prometheus's web API renders it.
type Target struct {
	DiscoveredLabels   map[string]string   `json:"discoveredLabels"`
	Labels             map[string]string   `json:"labels"`
	ScrapePool         string              `json:"scrapePool"`
	ScrapeURL          string              `json:"scrapeUrl"`
	GlobalURL          string              `json:"globalUrl"`
	LastError          string              `json:"lastError"`
	LastScrape         time.Time           `json:"lastScrape"`
	LastScrapeDuration float64             `json:"lastScrapeDuration"`
	Health             scrape.TargetHealth `json:"health"`
	ScrapeInterval     string              `json:"scrapeInterval"`
	ScrapeTimeout      string              `json:"scrapeTimeout"`
}

// DroppedTarget is one element of droppedTargets: a target the job's
// relabel_configs dropped (standalone mode; with a coordinator, dropping
// happens there). Prometheus keeps them as keep_dropped_targets allows.
type DroppedTarget struct {
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	ScrapePool       string            `json:"scrapePool"`
}

// TargetsResponse is the body of /api/v1/targets.
type TargetsResponse struct {
	Status string `json:"status"`
	Data   struct {
		ActiveTargets  []Target        `json:"activeTargets"`
		DroppedTargets []DroppedTarget `json:"droppedTargets"`
	} `json:"data"`
}

func (w *Worker) serveTargets(rw http.ResponseWriter, r *http.Request) {
	active := w.scrapeM.TargetsActive()
	jobs := make([]string, 0, len(active))
	for job := range active {
		jobs = append(jobs, job)
	}
	sort.Strings(jobs)
	resp := TargetsResponse{Status: "success"}
	resp.Data.ActiveTargets = []Target{}
	resp.Data.DroppedTargets = []DroppedTarget{}
	lb := labels.NewBuilder(labels.EmptyLabels())
	pool := r.URL.Query().Get("scrapePool")
	for _, job := range jobs {
		if pool != "" && pool != job {
			continue
		}
		for _, t := range active[job] {
			var lastErr string
			if err := t.LastError(); err != nil {
				lastErr = err.Error()
			}
			u := t.URL().String()
			resp.Data.ActiveTargets = append(resp.Data.ActiveTargets, Target{
				DiscoveredLabels:   t.DiscoveredLabels(lb).Map(),
				Labels:             t.Labels(lb).Map(),
				ScrapePool:         job,
				ScrapeURL:          u,
				GlobalURL:          u,
				LastError:          lastErr,
				LastScrape:         t.LastScrape(),
				LastScrapeDuration: t.LastScrapeDuration().Seconds(),
				Health:             t.Health(),
				ScrapeInterval:     t.GetValue("__scrape_interval__"),
				ScrapeTimeout:      t.GetValue("__scrape_timeout__"),
			})
		}
	}
	dropped := w.scrapeM.TargetsDropped()
	for _, job := range slices.Sorted(maps.Keys(dropped)) {
		if pool != "" && pool != job {
			continue
		}
		for _, t := range dropped[job] {
			resp.Data.DroppedTargets = append(resp.Data.DroppedTargets, DroppedTarget{
				DiscoveredLabels: t.DiscoveredLabels(lb).Map(),
				ScrapePool:       job,
			})
		}
	}
	rw.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(rw).Encode(resp)
}
