package coordinator

import (
	"github.com/prometheus/client_golang/prometheus"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

const ns, sub = "shardscrape", "coordinator"

type metrics struct {
	coordinator *Coordinator

	handoffsStarted   prometheus.Counter
	handoffsCompleted prometheus.Counter
	handoffsTimedOut  prometheus.Counter
	leaseExpiries     prometheus.Counter
	streamMessages    prometheus.Counter
	streamBytes       prometheus.Counter
	assignLatency     prometheus.Histogram
	generation        prometheus.Gauge

	discovered, kept, assigned, unassigned, excluded, ownedTwice, duplicates *prometheus.Desc
	workerTargets, workerSeries, workers                                     *prometheus.Desc
}

func newMetrics(reg prometheus.Registerer) *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, sub, name), help, labels, nil)
	}
	m := &metrics{
		handoffsStarted:   counter("handoffs_started_total", "Make-before-break moves started."),
		handoffsCompleted: counter("handoffs_completed_total", "Moves completed by the new owner's acknowledgement."),
		handoffsTimedOut:  counter("handoffs_timed_out_total", "Moves completed by the handoff timeout."),
		leaseExpiries:     counter("lease_expiries_total", "Worker leases that expired."),
		streamMessages:    counter("stream_messages_sent_total", "Assignment stream messages sent."),
		streamBytes:       counter("stream_sent_bytes_total", "Assignment stream bytes sent (estimated before framing)."),
		assignLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "assignment_latency_seconds",
			Help:    "Time from a discovery update (before relabeling) to every affected stream having sent it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "generation", Help: "Current assignment generation."}),

		discovered:    desc("targets_discovered", "Targets discovered, before relabeling."),
		kept:          desc("targets_kept", "Targets kept by relabeling (distinct ids)."),
		assigned:      desc("targets_assigned", "Kept, not excluded targets with an owner."),
		unassigned:    desc("targets_unassigned", "Kept, not excluded targets without an owner."),
		excluded:      desc("targets_excluded", "Kept targets excluded by an admin."),
		ownedTwice:    desc("targets_owned_twice", "Targets with more than the replication factor of non-outgoing owners (moves in progress)."),
		duplicates:    desc("targets_duplicate", "Targets dropped because another target of the job had the same id."),
		workerTargets: desc("worker_targets", "Targets a worker holds (not outgoing).", "worker"),
		workerSeries:  desc("worker_series", "Series over a worker's targets, from heartbeats.", "worker"),
		workers:       desc("workers", "Workers by state.", "state"),
	}
	if reg != nil {
		reg.MustRegister(m.handoffsStarted, m.handoffsCompleted, m.handoffsTimedOut, m.leaseExpiries,
			m.streamMessages, m.streamBytes, m.assignLatency, m.generation, m)
	}
	return m
}

// Describe implements prometheus.Collector for the figures computed from
// the assignment table.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.discovered, m.kept, m.assigned, m.unassigned, m.excluded, m.ownedTwice, m.duplicates, m.workerTargets, m.workerSeries, m.workers} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	c := m.coordinator
	if c == nil {
		return
	}
	cov := c.coverage()
	gauge := func(d *prometheus.Desc, v int, lvs ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), lvs...)
	}
	gauge(m.discovered, cov.discovered)
	gauge(m.kept, cov.kept)
	gauge(m.assigned, cov.assigned)
	gauge(m.unassigned, cov.unassigned)
	gauge(m.excluded, cov.excluded)
	gauge(m.ownedTwice, cov.ownedTwice)
	gauge(m.duplicates, cov.duplicates)
	for id, n := range cov.workerTargets {
		gauge(m.workerTargets, n, id)
		gauge(m.workerSeries, int(cov.workerSeries[id]), id)
	}
	for s, name := range shardscrapev1.WorkerState_name {
		if s == 0 {
			continue
		}
		gauge(m.workers, cov.workers[shardscrapev1.WorkerState(s)], name)
	}
}

type coverage struct {
	discovered, kept, assigned, unassigned, excluded, ownedTwice, duplicates int
	workerTargets                                                            map[string]int
	workerSeries                                                             map[string]uint64
	workers                                                                  map[shardscrapev1.WorkerState]int
}

// coverage computes the coverage figures from the table.
func (c *Coordinator) coverage() coverage {
	c.mu.Lock()
	defer c.mu.Unlock()
	cov := coverage{
		kept:          c.targets.len(),
		duplicates:    c.duplicates,
		workerTargets: map[string]int{},
		workerSeries:  map[string]uint64{},
		workers:       map[shardscrapev1.WorkerState]int{},
	}
	for _, n := range c.discovered {
		cov.discovered += n
	}
	for _, w := range c.workers {
		cov.workers[w.state]++
		if w.alive() {
			cov.workerTargets[w.id] = 0
		}
	}
	for _, t := range c.targets.all() {
		if _, ok := c.admin.excluded(t.Job, t.Address); ok {
			cov.excluded++
			continue
		}
		n := 0
		for _, s := range t.slots {
			if s.state != stateOutgoing {
				n++
				cov.workerTargets[s.w.id]++
				cov.workerSeries[s.w.id] += t.series
			}
		}
		switch {
		case n == 0:
			cov.unassigned++
		case n > c.opts.ReplicationFactor:
			cov.assigned++
			cov.ownedTwice++
		default:
			cov.assigned++
		}
	}
	return cov
}
