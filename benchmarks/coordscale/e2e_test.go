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
	for _, want := range []string{"## 20 nodes × 3 pods, 5 workers", "## 2000 static targets, 5 workers", "## Goals", "fully assigned ≤ 2 s after discovery", "peak RSS ≤ 1.5 GiB", "| join: targets moved", "| join: converged, handoffs acked at next poll", "| leave: converged, handoffs acked at next poll", "≈ converged + one scrape interval + 1 s", "| targets per worker after the leave (min / median / max)"} {
		require.Contains(t, md, want)
	}
	require.NoError(t, os.WriteFile(reportFile(o.out, time.Now()), []byte(md), 0o644))
	require.True(t, strings.HasSuffix(reportFile(o.out, time.Now()), "-coordinator-scale.md"))
}
