package scraper

import (
	"github.com/prometheus/client_golang/prometheus"
)

type workerMetrics struct {
	targets             *prometheus.GaugeVec
	handoffAcks         prometheus.Counter
	connected           prometheus.Gauge
	generation          prometheus.Gauge
	persistErrors       prometheus.Counter
	reconnects          prometheus.Counter
	joins               prometheus.Counter
	configErrors        prometheus.Counter
	updatesApplied      prometheus.Counter
	updatesRejected     *prometheus.CounterVec
	heartbeatFailures   prometheus.Counter
	noStalenessStopped  prometheus.Counter
	ready               prometheus.Gauge
	configReloads       *prometheus.CounterVec
	lastReloadSucceeded prometheus.Gauge
}

func newWorkerMetrics(reg prometheus.Registerer) (*workerMetrics, error) {
	m := &workerMetrics{
		targets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shardscrape_scraper_targets",
			Help: "Targets the worker holds, by state (active, incoming, outgoing).",
		}, []string{"state"}),
		handoffAcks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_scraper_handoff_acks_total",
			Help: "First completed scrapes of incoming targets acknowledged to the coordinator.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardscrape_scraper_coordinator_connected",
			Help: "1 while the worker holds a lease and an open assignment stream.",
		}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardscrape_scraper_assignment_generation",
			Help: "Generation of the assignment the worker has applied.",
		}),
		persistErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_scraper_state_persist_errors_total",
			Help: "Failures to write or read the local assignment state file.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_scraper_reconnects_total",
			Help: "Assignment streams opened again after an error or a generation mismatch.",
		}),
		joins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_scraper_joins_total",
			Help: "Successful Join calls (the first and every re-join).",
		}),
		configErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_scraper_config_errors_total",
			Help: "Assignment updates whose configuration failed to build or apply; the previous one stays in force.",
		}),
		updatesApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_scraper_assignment_updates_applied_total",
			Help: "Assignment updates (snapshots and deltas) applied.",
		}),
		updatesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardscrape_scraper_assignment_updates_rejected_total",
			Help: "Assignment updates rejected, by reason.",
		}, []string{"reason"}),
		heartbeatFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_scraper_heartbeat_failures_total",
			Help: "Heartbeats that failed.",
		}),
		noStalenessStopped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_scraper_targets_stopped_without_staleness_total",
			Help: "Targets stopped without end-of-run staleness markers (moved away, or left out of a snapshot).",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardscrape_scraper_ready",
			Help: "1 when the worker has an assignment (or config) in force and is not shutting down.",
		}),
		configReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardscrape_scraper_config_reloads_total",
			Help: "Standalone mode: configuration file reloads, by result.",
		}, []string{"result"}),
		lastReloadSucceeded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardscrape_scraper_config_last_reload_successful",
			Help: "Standalone mode: whether the last configuration reload succeeded.",
		}),
	}
	for _, s := range []string{"active", "incoming", "outgoing"} {
		m.targets.WithLabelValues(s)
	}
	for _, r := range []string{"base_mismatch", "unknown_config", "config"} {
		m.updatesRejected.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure"} {
		m.configReloads.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{
			m.targets, m.handoffAcks, m.connected, m.generation, m.persistErrors, m.reconnects,
			m.joins, m.configErrors, m.updatesApplied, m.updatesRejected, m.heartbeatFailures,
			m.noStalenessStopped, m.ready, m.configReloads, m.lastReloadSucceeded,
		} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
