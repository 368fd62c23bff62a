package scraper

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// TestNoGoroutineLeak: a worker that ran an assignment and stopped leaves
// no goroutine of its own behind.
func TestNoGoroutineLeak(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	// Cleanups run last-in first-out: this one after the test's servers
	// and connections have closed.
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	a := target(t, nil)
	f := &fakeCoordinator{leaveResp: &pb.LeaveResponse{Drained: true}}
	client, _, _ := serve(t, f)
	r := start(t, workerOpts(t.TempDir(), client))
	f.send(t, 1, &pb.WatchAssignmentsResponse{Generation: 1, Snapshot: true, Global: global,
		Configs: []*pb.ScrapeConfig{scrapeConfig("j")}, Upserts: []*pb.Target{pbTarget("j", a, active)}})
	require.Eventually(t, scrapedOK(r, "j", a), 10*time.Second, 20*time.Millisecond)
	r.stop(t)
}
