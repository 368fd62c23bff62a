package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/shardscrape/shardscrape/benchmarks/internal/report"
)

// reportScenario is the results file's scenario name.
const reportScenario = "coordinator-scale"

func reportFile(dir string, t time.Time) string { return report.FileName(dir, reportScenario, t) }

func thousands(n int) string { return report.Float(float64(n), 0) }

func bytesStr(n int64) string { return report.Bytes(float64(n)) }

func secs(d time.Duration) string { return report.Float(d.Seconds(), 3) + " s" }

// Goals from issue 6.
const (
	goalStaticSeconds = 1.0
	goalStaticRSS     = 1.5 * (1 << 30)
	goalFleetSeconds  = 2.0
)

// assignAfterDiscovery is the goal's figure: from the syncer receiving
// the full discovery update (relabeling included) to full assignment, or,
// without the debug log line, from the discovered metric's full reading.
func (r *scenarioResult) assignAfterDiscovery() (time.Duration, string, bool) {
	switch {
	case r.haveSync:
		return r.full - r.delivered, "from the syncer receiving discovery's update (relabeling included)", true
	case r.metricFull > 0:
		return r.full - r.metricFull, "from targets_discovered's first full reading (relabeling excluded)", true
	}
	return 0, "", false
}

// releasedToFull is the second anchor: from the release (the fakes
// answer, or the file_sd file renamed in) to full assignment. It includes
// discovery's own work and any send the discovery manager delayed.
func (r *scenarioResult) releasedToFull() (time.Duration, bool) {
	if r.released == 0 || r.full == 0 {
		return 0, false
	}
	return r.full - r.released, true
}

// delayedFlag is the report's warning when the discovery manager delayed
// a send between the release and full assignment ("" when not).
func (r *scenarioResult) delayedFlag(updateInterval time.Duration) string {
	if !r.haveDelayed || r.delayed == 0 {
		return ""
	}
	return fmt.Sprintf("⚠ %s rose by %s between the release and full assignment: discovery.Manager found the syncer busy and retried at a later tick, "+
		"so the discovery anchor (syncer received) can omit up to one --discovery.update-interval (%s); the \"released → fully assigned\" figure includes it",
		metricDelayedUpdates, report.Float(r.delayed, 0), updateInterval)
}

const (
	anchorReleased = "released (fakes answer / file renamed)"
)

// goalsTable is issue 6's goals, each time goal measured from both
// anchors: discovery (the syncer receiving the full update, else
// targets_discovered's first full reading) and the release.
func goalsTable(results []*scenarioResult) report.Table {
	goals := report.Table{Header: []string{"goal (issue 6)", "counted from", "measured", "", "gap"}}
	secsUnit := func(v float64) string { return report.Float(v, 3) + " s" }
	for _, r := range results {
		d, how, ok := r.assignAfterDiscovery()
		isStatic := r.kind == scenarioStatic
		goalSecs, goalText := goalFleetSeconds, r.name+": fully assigned ≤ 2 s after discovery"
		if isStatic {
			goalSecs, goalText = goalStaticSeconds, r.name+", "+strconv.Itoa(r.workers)+" workers: fully assigned ≤ 1 s after discovery"
		}
		if !ok || r.full == 0 {
			goals.Add(goalText, "not measured", "n/a", "n/a", "")
		} else {
			met, g := gap(d.Seconds(), goalSecs, secsUnit)
			goals.Add(goalText, "discovery: "+how, secs(d), met, g)
		}
		if rd, ok := r.releasedToFull(); ok {
			met, g := gap(rd.Seconds(), goalSecs, secsUnit)
			goals.Add(goalText, anchorReleased+", discovery's own work and any delayed send included", secs(rd), met, g)
		}
		if isStatic && r.full > 0 {
			met, g := gap(float64(r.rssFull), goalStaticRSS, report.Bytes)
			goals.Add(r.name+", "+strconv.Itoa(r.workers)+" workers: peak RSS ≤ 1.5 GiB", "at full assignment", report.Bytes(float64(r.rssFull)), met, g)
			if r.peakRSS > r.rssFull {
				met, g = gap(float64(r.peakRSS), goalStaticRSS, report.Bytes)
				goals.Add(r.name+": peak RSS ≤ 1.5 GiB", "whole run, join and leave included", report.Bytes(float64(r.peakRSS)), met, g)
			}
		}
	}
	return goals
}

func gap(measured, goal float64, unit func(float64) string) (string, string) {
	if measured <= goal {
		return "met", "−" + unit(goal-measured) + " under"
	}
	return "not met", "+" + unit(measured-goal) + " (" + report.Ratio(measured, goal) + " the goal)"
}

func renderReport(o options, bin string, results []*scenarioResult, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Coordinator at high node counts, %s\n\n", now.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "`go run ./benchmarks/coordscale --scenario %s --workers %d --nodes %d --pods-per-node %d --static-targets %d --discovery.update-interval %s --ack-poll %s --idle %s --settle %s`\n\n",
		o.scenario, o.workers, o.nodes, o.podsPerNode, o.staticTargets, o.updateInterval, o.ackPoll, o.idle, o.settle)
	b.WriteString("## Machine\n\n")
	b.WriteString(report.Detect().Markdown())
	fmt.Fprintf(&b, "- Coordinator: `%s` (%s)\n", bin, report.Build(bin))
	env := "none"
	var set []string
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			set = append(set, k+"="+v)
		}
	}
	if len(set) > 0 {
		env = strings.Join(set, " ")
	}
	fmt.Fprintf(&b, "- Coordinator's Go runtime environment: %s\n\n", env)

	b.WriteString("## Method\n\n")
	fmt.Fprintf(&b, `The real coordinator binary runs as a child process on loopback ports with default flags except
`+"`--discovery.update-interval=%s`"+` (discovery.Manager's batching; the coordinator's and Prometheus's
default is 5s) and `+"`--log.level=debug`"+` (one line per applied discovery update, used as an anchor). Its CPU
(utime+stime) and peak RSS (VmHWM) come from /proc only. %d simulated workers are in-process gRPC clients of
the benchmark: each Joins, keeps a WatchAssignments stream open on a connection of its own and applies its
snapshot and deltas into its own view (as scraper/assignment.go: parts merged, a delta on another base
reconnects), heartbeats at the lease cadence (the JoinResponse's interval: 5 s with the default 15 s TTL)
with its applied generation and the load of every target it newly holds (100 series, up), and acks each
INCOMING target's "first scrape" at its next ack poll (every %s; a real worker polls every 1 s after a real
first scrape) with an early heartbeat, so make-before-break completes. It scrapes nothing. A leaving worker
calls Leave and keeps heartbeating and watching until it returns, as a SIGTERM'd worker does. Stream bytes
are counted on the wire (a counting net.Conn under each stream's connection: HTTP/2 framing included).

The join and leave "converged, handoffs acked at next poll" times are therefore a coordinator-side best
case: a simulated worker acks an INCOMING target at its next %s poll. A real worker acks only after the
target's first scrape, which comes within one scrape interval (%s here), and checks for acks every 1 s: with
real workers, expect up to ≈ converged + one scrape interval + 1 s. Scrapes are not modelled.

"Fully assigned" / "converged": every expected target is ACTIVE on exactly one view, none INCOMING (every
handoff acked), nothing unexpected, and the views' (job, __address__) pairs are exactly the expected set
(built from the fleet's nodes and pods or the generated file, not from the coordinator), and no view
changed for `+"`--settle`"+` (%s) after it; the time is the last view update before that state. OUTGOING targets (stopped, awaiting removal) are allowed;
"outgoing removed" is when no view holds one any more (the coordinator removes them after the old owner's
next heartbeat reports the generation: up to one heartbeat interval).

Discovery anchors, all from the coordinator's start: "syncer received" is the debug line "Discovery update
applied" of the update that brought the full count, its time minus its duration (so relabeling and the
core's UpdateTargets come after it); "targets_discovered full" is the first 1 s poll of /metrics reading
the full count (set after relabeling, just before the core's UpdateTargets); "fake API's last response write" is
the last byte the fakes wrote before full assignment (Kubernetes SD then still builds its groups, and the
discovery manager waits for its next update-interval tick). "released" is when the fakes start answering
or the file_sd file is renamed into its watched directory. The discovery → fully assigned figure counts from
"syncer received"; it can omit up to one --discovery.update-interval when discovery.Manager found the
syncer busy, dropped a send and retried at its next tick (prometheus_sd_updates_delayed_total, read from the
coordinator's /metrics at the release and at full assignment; a rise is flagged). "released → fully
assigned" includes that wait and discovery's own work. The goals table shows both anchors.

The fakes hold every request, and the file_sd file is renamed into its watched directory, only once every
worker has joined (all at once, as a StatefulSet's pods): the figures are those of a full target set
assigned to a full fleet.

`, o.updateInterval, o.workers, o.ackPoll, o.ackPoll, scrapeInterval, o.settle)

	for _, r := range results {
		fmt.Fprintf(&b, "## %s, %d workers\n\n", r.name, r.workers)
		fmt.Fprintf(&b, "Workload: %s.\n\n", r.workload)
		if r.note != "" {
			fmt.Fprintf(&b, "Why: %s.\n\n", r.note)
		}
		b.WriteString(r.table().Markdown())
		b.WriteString("\n")
		if f := r.delayedFlag(o.updateInterval); f != "" {
			fmt.Fprintf(&b, "%s.\n\n", f)
		}
		if len(r.problems) > 0 {
			b.WriteString("Problems:\n\n")
			for _, p := range r.problems {
				fmt.Fprintf(&b, "- %s\n", p)
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("## Goals\n\n")
	b.WriteString("Each time goal twice: counted from discovery (the syncer receiving the full update; may omit a delayed send, see Method) and from the release (fakes answer / file renamed; includes discovery's own work).\n\n")
	b.WriteString(goalsTable(results).Markdown())
	for _, r := range results {
		if f := r.delayedFlag(o.updateInterval); f != "" {
			fmt.Fprintf(&b, "\n%s: %s.\n", r.name, f)
		}
	}
	b.WriteString("\nAbsolute figures are from a shared 2-core machine (the benchmark's simulated workers and the fakes run on the same cores as the coordinator); compare runs only on the same machine.\n")
	return b.String()
}

func (r *scenarioResult) table() report.Table {
	t := report.Table{Header: []string{"figure", "value", "note"}}
	dur := func(d time.Duration) string {
		if d == 0 {
			return "n/a"
		}
		return secs(d)
	}
	t.Add("targets expected", thousands(r.targets), "")
	t.Add("coordinator ready", dur(r.ready), "from its start, /-/ready polled every 50 ms")
	t.Add("workers joined", dur(r.joined), "every worker joined and applied its first (empty) snapshot")
	t.Add(anchorReleased, dur(r.released), "once every worker joined")
	if r.apiLast > 0 {
		t.Add("fake API's last response write", dur(r.apiLast), "read at full assignment (watch-list streams included)")
	}
	if r.haveSync {
		t.Add("syncer received the full discovery update", dur(r.delivered), "debug log: line time − duration")
		t.Add("… relabeled and handed to the core", dur(r.relabeled), "the same line's time")
	}
	t.Add("targets_discovered first full", dur(r.metricFull), "/metrics polled every second (each scrape walks every target)")
	t.Add("fully assigned", dur(r.full), "every target ACTIVE on exactly one view")
	if d, how, ok := r.assignAfterDiscovery(); ok && r.full > 0 {
		t.Add("**discovery → fully assigned**", "**"+secs(d)+"**", how+"; can omit a delayed send (next row)")
	}
	if r.haveDelayed {
		note := "none: no send waited for a later tick"
		if r.delayed != 0 {
			note = "⚠ the discovery anchor can omit up to one --discovery.update-interval"
		}
		t.Add("discovery sends delayed, release → full assignment", report.Float(r.delayed, 0), metricDelayedUpdates+" increase; "+note)
	}
	if rd, ok := r.releasedToFull(); ok {
		t.Add("**"+anchorReleased+" → fully assigned**", "**"+secs(rd)+"**", "discovery's own work (fakes' answers, SD's group building, file_sd's read) and any delayed send included")
	}
	if r.haveSync && r.full > 0 {
		t.Add("… syncer received → handed to the core", secs(r.relabeled-r.delivered), "relabeling (Prometheus's PopulateLabels per target) and the core's UpdateTargets")
		t.Add("… handed to the core → fully assigned", secs(r.full-r.relabeled), "streams sent, received and applied by the workers")
	}
	if r.metricFull > 0 && r.full > 0 {
		t.Add("targets_discovered full → fully assigned", secs(r.full-r.metricFull), "")
	}
	if r.full > 0 {
		t.Add("coordinator CPU at full assignment", secs(r.cpuFull), "since its start (discovery, relabeling, assignment, streams); sampled when the state was first verified")
		t.Add("coordinator peak RSS at full assignment", report.Bytes(float64(r.rssFull)), "VmHWM")
		t.Add("benchmark process CPU meanwhile", secs(r.benchCPU), "the fakes and the simulated workers, on the same 2 cores")
		t.Add("assignment stream bytes (wire), all workers", report.Bytes(float64(r.wireFull)), "since each stream opened, sampled with the CPU; payload (protobuf) "+report.Bytes(float64(r.payload))+" by the end")
		t.Add("… per worker, max", report.Bytes(float64(r.wireMaxW)), "")
		if len(r.counts) > 0 {
			t.Add("targets per worker "+r.countsPhase+" (min / median / max)", countsStr(r.counts), fmt.Sprintf("%d workers", len(r.counts)))
		}
	}
	for _, e := range []eventFigures{r.join, r.leave} {
		if e.kind == "" {
			continue
		}
		t.Add("**"+e.kind+" one worker**", "", "")
		t.Add(e.kind+": targets moved", thousands(e.moved), e.movedNote())
		t.Add(e.kind+": converged, handoffs acked at next poll", secs(e.converged), "from the "+map[string]string{"join": "Join call", "leave": "Leave call"}[e.kind]+
			"; coordinator-side best case (simulated acks at the next poll); a real worker: up to ≈ + one scrape interval ("+scrapeInterval+") + 1 s")
		if e.kind == "leave" {
			t.Add("leave: Leave returned", secs(e.leaveReturned), fmt.Sprintf("drained=%t, remaining %d", e.drained, e.remaining))
		}
		t.Add(e.kind+": outgoing removed", secs(e.cleaned), "")
		t.Add(e.kind+": stream bytes (wire), all workers", report.Bytes(float64(e.wire)), "until converged (sampled when first verified, as at full assignment); max per worker "+report.Bytes(float64(e.wireMax)))
		t.Add(e.kind+": coordinator CPU", secs(e.cpu), "until converged (sampled with the bytes)")
	}
	if r.idle > 0 {
		t.Add(fmt.Sprintf("idle %s: coordinator CPU", r.idle), secs(r.idleCPU), report.Float(100*r.idleCPU.Seconds()/r.idle.Seconds(), 2)+"% of one core; heartbeats only")
		t.Add("idle: stream bytes (wire)", report.Bytes(float64(r.idleWire)), "")
		t.Add("coordinator peak RSS, whole run", report.Bytes(float64(r.peakRSS)), "VmHWM")
		t.Add("coordinator CPU, whole run", secs(r.cpuTotal), "")
		t.Add("worker re-joins / stream reconnects", fmt.Sprintf("%d / %d", r.rejoins, r.reconnects), "0 expected")
	}
	return t
}

func (e eventFigures) movedNote() string {
	switch e.kind {
	case "join":
		return fmt.Sprintf("the joiner holds %s; fair share %s; moved/fair %s", thousands(e.subject), report.Float(e.ideal, 0), report.Ratio(float64(e.moved), e.ideal))
	default:
		return fmt.Sprintf("the leaver held %s; moved/held %s", thousands(e.subject), report.Ratio(float64(e.moved), e.ideal))
	}
}

func countsStr(c []int) string {
	if len(c) == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%s / %s / %s", thousands(c[0]), thousands(c[len(c)/2]), thousands(c[len(c)-1]))
}
