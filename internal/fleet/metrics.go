package fleet

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	scrapes *prometheus.CounterVec
	unknown prometheus.Counter
}

// newMetrics builds the fleet's metrics and registers them on reg (nil: none).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		scrapes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardscrape_fleet_scrapes_served_total",
			Help: "Scrapes the simulated targets served, by kind of target (node or pod).",
		}, []string{"kind"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardscrape_fleet_unknown_address_requests_total",
			Help: "Requests on a target port at a local address that is no target's.",
		}),
	}
	m.scrapes.WithLabelValues("node")
	m.scrapes.WithLabelValues("pod")
	if reg != nil {
		reg.MustRegister(m.scrapes, m.unknown)
	}
	return m
}
