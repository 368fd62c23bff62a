package main

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// TestSmallRun runs both scenarios small against the real coordinator
// binary, built from this checkout.
func TestSmallRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the coordinator binary")
	}
	bin := t.TempDir()
	require.NoError(t, testenv.BuildCommands(bin, "coordinator"))
	o := options{
		bin: bin, out: t.TempDir(), scenario: scenarioAll,
		workers: 5, nodes: 20, podsPerNode: 3, staticTargets: 2000,
		updateInterval: 200 * time.Millisecond, leaseTTL: 3 * time.Second, ackPoll: 50 * time.Millisecond,
		idle: 500 * time.Millisecond, timeout: time.Minute, settle: 500 * time.Millisecond,
		logger: slog.New(slog.DiscardHandler),
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	var results []*scenarioResult
	for _, tc := range []struct {
		fn      func(context.Context, options) (*scenarioResult, error)
		targets int
	}{{runFleet, 20 * 4}, {runStatic, 2000}} {
		r, err := tc.fn(ctx, o)
		require.NoError(t, err)
		results = append(results, r)
		require.Empty(t, r.problems)
		require.Equal(t, tc.targets, r.targets)
		require.True(t, r.haveSync, "the discovery update's log line was found")
		require.Positive(t, r.full)
		require.LessOrEqual(t, r.delivered, r.full)
		require.GreaterOrEqual(t, r.delivered, r.joined, "discovery answered only after the workers joined")
		require.GreaterOrEqual(t, r.released, r.joined)
		// The syncer's anchor comes from a log line stamped to the
		// millisecond, so it can read up to 1 ms early.
		require.LessOrEqual(t, r.released, r.delivered+time.Millisecond, "%s: released before the syncer received the update", r.name)
		require.True(t, r.haveDelayed, "prometheus_sd_updates_delayed_total read at the release and at full assignment")
		require.GreaterOrEqual(t, r.delayed, 0.0)
		require.Positive(t, r.cpuFull)
		require.Positive(t, r.rssFull)
		require.Positive(t, r.wireFull)
		require.GreaterOrEqual(t, r.wireFull, r.payload, "wire bytes include the payload")

		require.Positive(t, r.join.subject, "the joiner holds targets")
		require.GreaterOrEqual(t, r.join.moved, r.join.subject)
		// Sticky placement: a join moves about a fair share, all to the
		// joiner; a leave moves exactly the leaver's targets.
		fair := float64(tc.targets) / float64(o.workers+1)
		require.LessOrEqual(t, float64(r.join.moved), 1.1*fair+1, "a join moves at most about a fair share")
		require.GreaterOrEqual(t, float64(r.join.subject), 0.9*fair-1, "the joiner gets about a fair share")
		require.Positive(t, r.join.wire)
		require.True(t, r.leave.drained)
		require.Positive(t, r.leave.wire, "the leave's bytes keep the leaver's, which stopped before the sample")
		require.Positive(t, r.leave.subject)
		require.Equal(t, r.leave.subject, r.leave.moved, "exactly the leaver's targets moved")
		require.Equal(t, "after the leave", r.countsPhase)
		require.Len(t, r.leave.countsAfter, o.workers)
		sum := 0
		for _, c := range r.leave.countsAfter {
			sum += c
		}
		require.Equal(t, tc.targets, sum)
		require.Zero(t, r.rejoins)
		require.Zero(t, r.reconnects)
	}

	md := renderReport(o, bin+"/coordinator", results, time.Now())
	t.Log(md)
	for _, want := range []string{"## 20 nodes × 3 pods, 5 workers", "## 2000 static targets, 5 workers", "## Goals", "fully assigned ≤ 2 s after discovery", "peak RSS ≤ 1.5 GiB", "| join: targets moved", "| join: converged, handoffs acked at next poll", "| leave: converged, handoffs acked at next poll", "≈ converged + one scrape interval + 1 s", "| targets per worker after the leave (min / median / max)",
		"| **released (fakes answer / file renamed) → fully assigned**", "| discovery sends delayed, release → full assignment", "counted from"} {
		require.Contains(t, md, want)
	}
	require.NoError(t, os.WriteFile(reportFile(o.out, time.Now()), []byte(md), 0o644))
	require.True(t, strings.HasSuffix(reportFile(o.out, time.Now()), "-coordinator-scale.md"))
}

// TestGoalsBothAnchors: every time goal is shown from both anchors, and a
// delayed discovery send is flagged.
func TestGoalsBothAnchors(t *testing.T) {
	r := &scenarioResult{kind: scenarioStatic, name: "10 static targets", workers: 2,
		released: 2 * time.Second, delivered: 3 * time.Second, haveSync: true, full: 3500 * time.Millisecond,
		rssFull: 1 << 20, haveDelayed: true}
	md := goalsTable([]*scenarioResult{r}).Markdown()
	require.Contains(t, md, "discovery: from the syncer receiving")
	require.Contains(t, md, "| 0.500 s ")
	require.Contains(t, md, anchorReleased)
	require.Contains(t, md, "| 1.500 s ")
	require.Contains(t, md, "at full assignment")
	require.Empty(t, r.delayedFlag(5*time.Second))
	require.Contains(t, r.table().Markdown(), "none: no send waited")

	r.delayed = 2
	require.Contains(t, r.delayedFlag(5*time.Second), "rose by 2")
	require.Contains(t, r.delayedFlag(5*time.Second), "(5s)")
	require.Contains(t, r.table().Markdown(), "⚠ the discovery anchor can omit")

	r.haveDelayed = false
	require.Empty(t, r.delayedFlag(5*time.Second))
}
