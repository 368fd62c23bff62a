package scraper

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

const (
	active   = pb.TargetState_TARGET_STATE_ACTIVE
	incoming = pb.TargetState_TARGET_STATE_INCOMING
	outgoing = pb.TargetState_TARGET_STATE_OUTGOING
)

var global = &pb.GlobalConfig{
	Hash:           "g1",
	Yaml:           []byte("global:\n  scrape_interval: 1m\n  external_labels:\n    cluster: user\n"),
	ExternalLabels: []*pb.Label{{Name: "cluster", Value: "c1"}},
	ConfigDir:      "/etc/prometheus",
}

func scrapedOK(r *running, job, addr string) func() bool {
	return func() bool {
		v, ok := r.rec.up(job, addr)
		return ok && v == 1
	}
}

func isActive(r *running, job, addr string) bool {
	for _, t := range r.w.ScrapeManager().TargetsActive()[job] {
		if t.URL().Host == addr {
			return true
		}
	}
	return false
}

func TestAssignmentLifecycle(t *testing.T) {
	a, b, c := target(t, nil), target(t, nil), target(t, nil)
	f := &fakeCoordinator{leaveResp: &pb.LeaveResponse{Drained: true}}
	client, _, _ := serve(t, f)
	dir := t.TempDir()
	r := start(t, workerOpts(dir, client))

	require.Eventually(t, func() bool { return len(f.joinReqs()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "worker-0", f.joinReqs()[0].WorkerId)
	require.False(t, r.w.Ready())

	// A snapshot in two parts; the worker applies it when the last arrives.
	f.send(t, 1,
		&pb.WatchAssignmentsResponse{Generation: 1, Snapshot: true, Partial: true, Global: global,
			Configs: []*pb.ScrapeConfig{scrapeConfig("j")}, Upserts: []*pb.Target{pbTarget("j", a, active)}},
		&pb.WatchAssignmentsResponse{Generation: 1, Snapshot: true,
			Upserts: []*pb.Target{pbTarget("j", b, active)}},
	)
	require.Eventually(t, scrapedOK(r, "j", a), 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, scrapedOK(r, "j", b), 10*time.Second, 20*time.Millisecond)
	require.True(t, r.w.Ready())
	require.Equal(t, uint64(1), r.w.Generation())
	require.Equal(t, 1.0, testutil.ToFloat64(r.w.metrics.generation))

	// Series carry the coordinator's cluster label as an external label
	// (added by remote storage), and no worker identity.
	require.Equal(t, "c1", r.w.CurrentConfig().GlobalConfig.ExternalLabels.Get("cluster"))

	// Loads: the series of the last scrape (2 exposed + 0), up, duration.
	require.Eventually(t, func() bool {
		l := f.load(idOf("j", a))
		return l != nil && l.Up && l.Series == 2
	}, 10*time.Second, 20*time.Millisecond)

	// The targets API lists them in Prometheus's shape.
	srv := httptest.NewServer(r.w.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/targets")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), `"scrapePool":"j"`)
	require.Contains(t, string(body), `"health":"up"`)
	resp, err = http.Get(srv.URL + "/-/ready")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = http.Get(srv.URL + "/metrics")
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), "shardscrape_scraper_assignment_generation 1")
	require.Contains(t, string(body), "prometheus_target_scrape_pools_total")

	// Handoff: a moves away (outgoing), c moves in (incoming).
	f.send(t, 1, &pb.WatchAssignmentsResponse{Generation: 2, BaseGeneration: 1,
		Upserts: []*pb.Target{pbTarget("j", a, outgoing), pbTarget("j", c, incoming)}})
	require.Eventually(t, func() bool { return f.acked(idOf("j", c)) }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return !isActive(r, "j", a) }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(r.w.metrics.handoffAcks))

	// A delta on another base: reconnect with the generation held.
	f.send(t, 1, &pb.WatchAssignmentsResponse{Generation: 9, BaseGeneration: 7})
	require.Eventually(t, func() bool { return len(f.watchReqs()) == 2 }, 10*time.Second, 10*time.Millisecond)
	w2 := f.watchReqs()[1]
	require.Equal(t, uint64(2), w2.ResumeGeneration)
	require.Contains(t, w2.KnownConfigHashes, "h-j")

	// A snapshot leaving out b: b stops without staleness markers. The
	// config arrives without its text (known hash).
	f.send(t, 2, &pb.WatchAssignmentsResponse{Generation: 3, Snapshot: true, Global: global,
		Configs: []*pb.ScrapeConfig{{Hash: "h-j", JobName: "j"}},
		Upserts: []*pb.Target{pbTarget("j", a, outgoing), pbTarget("j", c, active)}})
	require.Eventually(t, func() bool { return !isActive(r, "j", b) }, 10*time.Second, 20*time.Millisecond)

	// A removal for another reason stops c as Prometheus would, with
	// staleness markers (which shows the recorder sees them).
	f.send(t, 2, &pb.WatchAssignmentsResponse{Generation: 4, BaseGeneration: 3, RemovedTargetIds: []uint64{idOf("j", c)}})
	require.Eventually(t, func() bool { return r.rec.staleCount(c) > 0 }, 10*time.Second, 20*time.Millisecond)
	require.Zero(t, r.rec.staleCount(a), "outgoing target wrote staleness markers")
	require.Zero(t, r.rec.staleCount(b), "target left out of a snapshot wrote staleness markers")

	// The state file holds the merged assignment.
	var s *pb.WatchAssignmentsResponse
	require.Eventually(t, func() bool {
		var err error
		s, err = readState(dir)
		return err == nil && s != nil && s.Generation == 4
	}, 10*time.Second, 10*time.Millisecond)
	require.Len(t, s.Upserts, 1) // a, outgoing
	require.Equal(t, "h-j", s.Configs[0].Hash)
	require.NotEmpty(t, s.Configs[0].Yaml)

	// Lease lost: join again, keep scraping, resume the stream.
	f.send(t, 2, &pb.WatchAssignmentsResponse{Generation: 5, BaseGeneration: 4, Upserts: []*pb.Target{pbTarget("j", b, active)}})
	require.Eventually(t, scrapedOK(r, "j", b), 10*time.Second, 20*time.Millisecond)
	f.mtx.Lock()
	f.hbErr = status.Error(codes.FailedPrecondition, "lease expired")
	f.mtx.Unlock()
	require.Eventually(t, func() bool { return len(f.joinReqs()) == 2 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(5), f.joinReqs()[1].Generation)
	require.Eventually(t, func() bool { return len(f.watchReqs()) == 3 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(5), f.watchReqs()[2].ResumeGeneration)
	n := r.rec.sampleCount(b)
	require.Eventually(t, func() bool { return r.rec.sampleCount(b) > n+4 }, 10*time.Second, 20*time.Millisecond)

	// Shutdown: Leave drained, every target stops without staleness
	// markers, the state file goes, Run returns nil.
	r.stop(t)
	f.mtx.Lock()
	require.Len(t, f.leaves, 1)
	f.mtx.Unlock()
	require.Zero(t, r.rec.staleCount(b))
	_, err = os.Stat(filepath.Join(dir, stateFile))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestFailStatic(t *testing.T) {
	a := target(t, nil)
	f := &fakeCoordinator{}
	client, srv, _ := serve(t, f)
	dir := t.TempDir()
	opts := workerOpts(dir, client)
	opts.LeaveOnShutdown = false
	r := start(t, opts)
	f.send(t, 1, &pb.WatchAssignmentsResponse{Generation: 7, Snapshot: true, Global: global,
		Configs: []*pb.ScrapeConfig{scrapeConfig("j")}, Upserts: []*pb.Target{pbTarget("j", a, active)}})
	require.Eventually(t, scrapedOK(r, "j", a), 10*time.Second, 20*time.Millisecond)

	// The coordinator goes away: scraping continues.
	srv.Stop()
	require.Eventually(t, func() bool { return testutil.ToFloat64(r.w.metrics.connected) == 0 }, 10*time.Second, 10*time.Millisecond)
	n := r.rec.sampleCount(a)
	require.Eventually(t, func() bool { return r.rec.sampleCount(a) > n+4 }, 10*time.Second, 20*time.Millisecond)
	require.True(t, r.w.Ready())
	r.stop(t)

	// Restarted with no coordinator: resumes from its state file.
	lis := deadAddr(t)
	opts = workerOpts(dir, dial(t, lis))
	r2 := start(t, opts)
	require.Eventually(t, scrapedOK(r2, "j", a), 10*time.Second, 20*time.Millisecond)
	require.True(t, r2.w.Ready())
	require.Equal(t, uint64(7), r2.w.Generation())
	require.Equal(t, "c1", r2.w.CurrentConfig().GlobalConfig.ExternalLabels.Get("cluster"))
	r2.stop(t)
}

func TestCorruptStateFile(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, stateFile), []byte("garbage\xff"), 0o644))
	r := start(t, workerOpts(dir, dial(t, deadAddr(t))))
	require.Eventually(t, func() bool { return testutil.ToFloat64(r.w.metrics.persistErrors) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.False(t, r.w.Ready())
	r.stop(t)
}

// TestOutgoingWithConfigChange: a delta that changes the job's config (its
// pool's loops restart) and makes a target outgoing still stops it without
// staleness markers, while a target removed in the same job gets them.
func TestOutgoingWithConfigChange(t *testing.T) {
	a, b := target(t, nil), target(t, nil)
	f := &fakeCoordinator{}
	client, _, _ := serve(t, f)
	opts := workerOpts(t.TempDir(), client)
	opts.LeaveOnShutdown = false
	// Slow target reloads: the restarted loops scrape before the target
	// set drops a.
	opts.Scrape.DiscoveryReloadInterval = model.Duration(time.Second)
	r := start(t, opts)
	f.send(t, 1, &pb.WatchAssignmentsResponse{Generation: 1, Snapshot: true, Global: global,
		Configs: []*pb.ScrapeConfig{scrapeConfig("j")},
		Upserts: []*pb.Target{pbTarget("j", a, active), pbTarget("j", b, active)}})
	require.Eventually(t, scrapedOK(r, "j", a), 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, scrapedOK(r, "j", b), 10*time.Second, 20*time.Millisecond)

	changed := &pb.ScrapeConfig{Hash: "h-j2", JobName: "j",
		Yaml: []byte("job_name: j\nscrape_interval: 200ms\nscrape_timeout: 120ms\n")}
	f.send(t, 1, &pb.WatchAssignmentsResponse{Generation: 2, BaseGeneration: 1, Configs: []*pb.ScrapeConfig{changed},
		Upserts: []*pb.Target{pbTarget("j", a, outgoing)}})
	require.Eventually(t, func() bool { return !isActive(r, "j", a) }, 10*time.Second, 20*time.Millisecond)
	// b's restarted loop must have scraped, or it has nothing to mark stale.
	n := r.rec.sampleCount(b)
	require.Eventually(t, func() bool { return r.rec.sampleCount(b) > n+8 }, 10*time.Second, 20*time.Millisecond)
	f.send(t, 1, &pb.WatchAssignmentsResponse{Generation: 3, BaseGeneration: 2, RemovedTargetIds: []uint64{idOf("j", b)}})
	require.Eventually(t, func() bool { return r.rec.staleCount(b) > 0 }, 10*time.Second, 20*time.Millisecond)
	require.Zero(t, r.rec.staleCount(a))
	r.stop(t)
}

// TestIncomingAckedOnce: an incoming target is acknowledged once, though
// later updates still list it as incoming until the coordinator turns it
// active.
func TestIncomingAckedOnce(t *testing.T) {
	a, b := target(t, nil), target(t, nil)
	f := &fakeCoordinator{}
	client, _, _ := serve(t, f)
	opts := workerOpts(t.TempDir(), client)
	opts.LeaveOnShutdown = false
	r := start(t, opts)
	f.send(t, 1, &pb.WatchAssignmentsResponse{Generation: 1, Snapshot: true, Global: global,
		Configs: []*pb.ScrapeConfig{scrapeConfig("j")}, Upserts: []*pb.Target{pbTarget("j", a, incoming)}})
	require.Eventually(t, func() bool { return f.acked(idOf("j", a)) }, 10*time.Second, 20*time.Millisecond)
	// Another target arrives; a is still incoming in the assignment.
	f.send(t, 1, &pb.WatchAssignmentsResponse{Generation: 2, BaseGeneration: 1,
		Upserts: []*pb.Target{pbTarget("j", b, active)}})
	require.Eventually(t, scrapedOK(r, "j", b), 10*time.Second, 20*time.Millisecond)
	// Several scrapes of a later, no second ack for it.
	n := r.rec.sampleCount(a)
	require.Eventually(t, func() bool { return r.rec.sampleCount(a) > n+8 }, 10*time.Second, 20*time.Millisecond)
	f.mtx.Lock()
	acks := 0
	for _, h := range f.heartbeats {
		for _, x := range h.Acks {
			if x.TargetId == idOf("j", a) {
				acks++
			}
		}
	}
	f.mtx.Unlock()
	require.Equal(t, 1, acks)
	require.Equal(t, 1.0, testutil.ToFloat64(r.w.metrics.handoffAcks))
	r.stop(t)
}
