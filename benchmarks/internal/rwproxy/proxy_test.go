package rwproxy

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/zstd"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/stretchr/testify/require"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
)

// received is one request the fake receiver got.
type received struct {
	method, path, query string
	header              http.Header
	body                []byte
}

// receiver is an httptest server recording every request; it answers
// status with a header of its own.
func receiver(t *testing.T, status int) (*httptest.Server, func() []received) {
	t.Helper()
	var (
		mu  sync.Mutex
		got []received
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, received{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
		mu.Unlock()
		w.Header().Set("X-Receiver", "vm")
		w.WriteHeader(status)
		_, _ = w.Write([]byte("answer"))
	}))
	t.Cleanup(srv.Close)
	return srv, func() []received {
		mu.Lock()
		defer mu.Unlock()
		return append([]received(nil), got...)
	}
}

// startProxy serves a proxy to target whose clock is now.
func startProxy(t *testing.T, target string, now time.Time) *Proxy {
	t.Helper()
	p, err := New(Options{Target: target, Now: func() time.Time { return now }})
	require.NoError(t, err)
	require.NoError(t, p.Start())
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// series are the test's samples: two target series at t0 and t0+1s, the
// scrape's up and scrape_samples_scraped at t0, and a staleness marker.
func series(t0 time.Time) []prompb.TimeSeries {
	ms := t0.UnixMilli()
	lbl := func(name string) []prompb.Label {
		return []prompb.Label{{Name: "__name__", Value: name}, {Name: "instance", Value: "a:9100"}, {Name: "job", Value: "node"}}
	}
	return []prompb.TimeSeries{
		{Labels: lbl("node_cpu_seconds_total"), Samples: []prompb.Sample{{Value: 1, Timestamp: ms}, {Value: 2, Timestamp: ms + 1000}}},
		{Labels: lbl("node_load1"), Samples: []prompb.Sample{{Value: 0.5, Timestamp: ms}, {Value: 0.7, Timestamp: ms + 1000}}},
		{Labels: lbl("up"), Samples: []prompb.Sample{{Value: 1, Timestamp: ms}}},
		{Labels: lbl("scrape_samples_scraped"), Samples: []prompb.Sample{{Value: 2, Timestamp: ms}}},
		{Labels: lbl("node_gone"), Samples: []prompb.Sample{{Value: math.Float64frombits(value.StaleNaN), Timestamp: ms + 1000}}},
	}
}

func v1Body(t testing.TB, ts []prompb.TimeSeries) []byte {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: ts}).Marshal()
	require.NoError(t, err)
	return snappy.Encode(nil, raw)
}

func v2Body(t *testing.T, ts []prompb.TimeSeries) []byte {
	t.Helper()
	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	for _, s := range ts {
		b := labels.NewScratchBuilder(len(s.Labels))
		for _, l := range s.Labels {
			b.Add(l.Name, l.Value)
		}
		out := writev2.TimeSeries{LabelsRefs: st.SymbolizeLabels(b.Labels(), nil)}
		for _, sm := range s.Samples {
			out.Samples = append(out.Samples, writev2.Sample{Value: sm.Value, Timestamp: sm.Timestamp})
		}
		req.Timeseries = append(req.Timeseries, out)
	}
	req.Symbols = st.Symbols()
	raw, err := req.Marshal()
	require.NoError(t, err)
	return snappy.Encode(nil, raw)
}

// store sends body through Prometheus's own remote-write client, with the
// headers it sets for msg.
func store(t *testing.T, proxyURL string, msg remoteapi.WriteMessageType, body []byte) {
	t.Helper()
	u, err := url.Parse(proxyURL + "/api/v1/write")
	require.NoError(t, err)
	c, err := remote.NewWriteClient("test", &remote.ClientConfig{
		URL: &config_util.URL{URL: u}, Timeout: model.Duration(10 * time.Second), WriteProtoMsg: msg,
	})
	require.NoError(t, err)
	_, err = c.Store(context.Background(), body, 0)
	if msg == remoteapi.WriteV2MessageType {
		// The fake receiver sends no X-Prometheus-Remote-Write-*-Written
		// headers, which a 2.0 client reports; the request went through.
		return
	}
	require.NoError(t, err)
}

func TestProtocols(t *testing.T) {
	t0 := time.UnixMilli(1_700_000_000_000)
	arrival := t0.Add(3 * time.Second)
	zenc, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		proto Protocol
		send  func(t *testing.T, proxyURL string) []byte // returns the body sent
	}{
		{"remote write 1.0", ProtocolV1, func(t *testing.T, u string) []byte {
			b := v1Body(t, series(t0))
			store(t, u, remoteapi.WriteV1MessageType, b)
			return b
		}},
		{"remote write 2.0", ProtocolV2, func(t *testing.T, u string) []byte {
			b := v2Body(t, series(t0))
			store(t, u, remoteapi.WriteV2MessageType, b)
			return b
		}},
		{"vmagent zstd", ProtocolVMZstd, func(t *testing.T, u string) []byte {
			raw, err := (&prompb.WriteRequest{Timeseries: series(t0)}).Marshal()
			require.NoError(t, err)
			b := zenc.EncodeAll(raw, nil)
			req, err := http.NewRequest(http.MethodPost, u+"/api/v1/write", bytes.NewReader(b))
			require.NoError(t, err)
			req.Header.Set("Content-Encoding", "zstd")
			req.Header.Set("Content-Type", "application/x-protobuf")
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusNoContent, resp.StatusCode)
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := receiver(t, http.StatusNoContent)
			p := startProxy(t, srv.URL, arrival)
			p.SetWindow(Window{From: t0.Add(500 * time.Millisecond), To: t0.Add(2 * time.Second)})
			body := tc.send(t, p.URL())

			reqs := got()
			require.Len(t, reqs, 1)
			require.Equal(t, http.MethodPost, reqs[0].method)
			require.Equal(t, "/api/v1/write", reqs[0].path)
			require.Equal(t, body, reqs[0].body, "forwarded unchanged")

			s := p.Stats()
			require.Equal(t, uint64(1), s.Requests)
			require.Equal(t, uint64(1), s.WriteRequests)
			require.Equal(t, uint64(len(body)), s.BodyBytes)
			require.Equal(t, map[Protocol]uint64{tc.proto: 1}, s.Protocols)
			require.Zero(t, s.DecodeErrors)
			require.Equal(t, uint64(4), s.All.Samples)
			require.Equal(t, uint64(2), s.All.ReportSamples)
			require.Equal(t, uint64(1), s.All.StaleMarkers)
			require.Equal(t, uint64(7), s.All.WireSamples())
			// Two samples 3 s old, two 2 s old.
			require.Equal(t, uint64(4), s.All.Delay.Count())
			require.Equal(t, 2*time.Second, s.All.Delay.Quantile(0.5))
			require.Equal(t, 3*time.Second, s.All.Delay.Quantile(0.99))
			require.Equal(t, 3*time.Second, s.All.Delay.Max())
			// Only the t0+1s samples are in the window.
			require.Equal(t, uint64(2), s.InWindow.Samples)
			require.Zero(t, s.InWindow.ReportSamples)
			require.Equal(t, uint64(1), s.InWindow.StaleMarkers)
			require.Equal(t, 2*time.Second, s.InWindow.Delay.Max())
			require.Equal(t, t0.Add(time.Second), s.MaxTimestamp)
		})
	}
}

// TestForwardsUnchanged: method, path, query, headers and body reach the
// receiver as sent, and its status, headers and body come back.
func TestForwardsUnchanged(t *testing.T) {
	srv, got := receiver(t, http.StatusTeapot)
	p := startProxy(t, srv.URL, time.Now())
	req, err := http.NewRequest(http.MethodGet, p.URL()+"/api/v1/write?get_vm_proto_version=1", nil)
	require.NoError(t, err)
	req.Header.Set("X-Sender", "vmagent")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	answer, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusTeapot, resp.StatusCode)
	require.Equal(t, "vm", resp.Header.Get("X-Receiver"))
	require.Equal(t, "answer", string(answer))

	reqs := got()
	require.Len(t, reqs, 1)
	require.Equal(t, http.MethodGet, reqs[0].method)
	require.Equal(t, "/api/v1/write", reqs[0].path)
	require.Equal(t, "get_vm_proto_version=1", reqs[0].query)
	require.Equal(t, "vmagent", reqs[0].header.Get("X-Sender"))

	s := p.Stats()
	require.Equal(t, uint64(1), s.Requests)
	require.Zero(t, s.WriteRequests, "a GET is not a write")
	require.Equal(t, uint64(1), s.Non2xx)
}

// TestBadBody: an undecodable body is forwarded as is and counted.
func TestBadBody(t *testing.T) {
	srv, got := receiver(t, http.StatusBadRequest)
	p := startProxy(t, srv.URL, time.Now())
	body := []byte("not snappy at all")
	resp, err := http.Post(p.URL()+"/api/v1/write", "application/x-protobuf", bytes.NewReader(body))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Len(t, got(), 1)
	require.Equal(t, body, got()[0].body)

	s := p.Stats()
	require.Equal(t, uint64(1), s.WriteRequests)
	require.Equal(t, uint64(1), s.DecodeErrors)
	require.NotEmpty(t, s.LastDecodeError)
	require.Equal(t, uint64(len(body)), s.BodyBytes)
	require.Zero(t, s.All.WireSamples())
}

// TestReceiverDown: the sender gets a 502 and the failure is counted.
func TestReceiverDown(t *testing.T) {
	srv, _ := receiver(t, http.StatusNoContent)
	srv.Close()
	p := startProxy(t, srv.URL, time.Now())
	resp, err := http.Post(p.URL()+"/api/v1/write", "application/x-protobuf", bytes.NewReader(v1Body(t, series(time.Now()))))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadGateway, resp.StatusCode)
	s := p.Stats()
	require.Equal(t, uint64(1), s.ForwardErrors)
	require.Zero(t, s.All.WireSamples(), "not accepted: not counted")
	require.Equal(t, uint64(1), s.RejectedWriteRequests)
	require.Equal(t, uint64(4), s.Rejected.Samples)
	require.Equal(t, uint64(2), s.Rejected.ReportSamples)
	require.Equal(t, uint64(1), s.Rejected.StaleMarkers)
}

// TestRetryCountedOnce: a request refused (503, 429) and retried counts
// its samples once, when accepted, with the accepted attempt's delay; the
// refused attempts count in Rejected.
func TestRetryCountedOnce(t *testing.T) {
	t0 := time.UnixMilli(1_700_000_000_000)
	var (
		mu       sync.Mutex
		statuses = []int{http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusNoContent}
		clock    = t0.Add(time.Second)
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		mu.Lock()
		st := statuses[0]
		statuses = statuses[1:]
		mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(srv.Close)
	p, err := New(Options{Target: srv.URL, Now: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	}})
	require.NoError(t, err)
	require.NoError(t, p.Start())
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	p.SetWindow(Window{From: t0, To: t0.Add(time.Minute)})

	body := v1Body(t, series(t0))
	for i, want := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusNoContent} {
		mu.Lock()
		clock = t0.Add(time.Duration(i+1) * 10 * time.Second) // 10 s, 20 s, 30 s after t0
		mu.Unlock()
		resp, err := http.Post(p.URL()+"/api/v1/write", "application/x-protobuf", bytes.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, want, resp.StatusCode)
	}
	s := p.Stats()
	require.Equal(t, uint64(3), s.WriteRequests)
	require.Equal(t, uint64(2), s.Non2xx)
	require.Equal(t, uint64(2), s.RejectedWriteRequests)
	require.Equal(t, uint64(8), s.Rejected.Samples, "two refused attempts of 4 samples")
	require.Equal(t, uint64(4), s.All.Samples, "counted once")
	require.Equal(t, uint64(4), s.InWindow.Samples, "counted once")
	require.Equal(t, uint64(4), s.InWindow.Delay.Count())
	// Delays are from the accepted (third) attempt: 30 s and 29 s.
	require.Equal(t, 29*time.Second, s.InWindow.Delay.Quantile(0.5))
	require.Equal(t, 30*time.Second, s.InWindow.Delay.Max())
}

// TestEndWindowAt: a window ended early keeps what it counted before its
// new end (delays as observed), drops what is stamped after, and counts
// later arrivals against the shorter window.
func TestEndWindowAt(t *testing.T) {
	t0 := time.UnixMilli(1_700_000_000_000)
	srv, _ := receiver(t, http.StatusNoContent)
	p := startProxy(t, srv.URL, t0.Add(3*time.Second))
	p.SetWindow(Window{From: t0, To: t0.Add(time.Minute)})
	post := func(ts []prompb.TimeSeries) {
		resp, err := http.Post(p.URL()+"/api/v1/write", "application/x-protobuf", bytes.NewReader(v1Body(t, ts)))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusNoContent, resp.StatusCode)
	}
	post(series(t0)) // 2 samples + up, scrape_* at t0 (3 s old); 2 samples + a marker at t0+1s (2 s old)
	s := p.Stats()
	require.Equal(t, uint64(4), s.InWindow.Samples)

	require.Error(t, p.EndWindowAt(t0.Add(2*time.Minute)), "a window is only shortened")
	require.Error(t, p.EndWindowAt(t0.Add(-time.Second)))
	require.NoError(t, p.EndWindowAt(t0.Add(time.Second)))
	s = p.Stats()
	require.Equal(t, Window{From: t0, To: t0.Add(time.Second)}, s.Window)
	require.Equal(t, uint64(2), s.InWindow.Samples, "the t0 samples stay counted")
	require.Equal(t, uint64(2), s.InWindow.ReportSamples)
	require.Zero(t, s.InWindow.StaleMarkers, "the marker at t0+1s is past the new end")
	require.Equal(t, uint64(2), s.InWindow.Delay.Count())
	require.Equal(t, 3*time.Second, s.InWindow.Delay.Max())
	require.Equal(t, uint64(4), s.All.Samples, "All is untouched")

	post(series(t0)) // a second copy: the t0 samples count again, the t0+1s ones not
	s = p.Stats()
	require.Equal(t, uint64(4), s.InWindow.Samples)
	require.Equal(t, uint64(2), s.All.StaleMarkers, "both markers in All")
	require.NoError(t, p.EndWindowAt(t0), "an empty window")
	require.Zero(t, p.Stats().InWindow.WireSamples())
}

func TestTargetPathPrefix(t *testing.T) {
	p, err := New(Options{Target: "http://127.0.0.1:1/insert/0/prometheus/"})
	require.NoError(t, err)
	u, err := url.Parse("/api/v1/write?x=1")
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:1/insert/0/prometheus/api/v1/write?x=1", p.forwardURL(u))
	_, err = New(Options{Target: "127.0.0.1:8428"})
	require.Error(t, err)
}

func TestHistogram(t *testing.T) {
	var h Histogram
	require.Zero(t, h.Quantile(0.99))
	for i := 1; i <= 100; i++ {
		h.Observe(time.Duration(i) * time.Millisecond)
	}
	h.Observe(-time.Second)
	require.Equal(t, uint64(101), h.Count())
	require.Equal(t, uint64(1), h.Negative())
	require.Equal(t, 50*time.Millisecond, h.Quantile(0.5)) // the 51st of 0 (the negative one), 1, …, 100 ms
	require.Equal(t, 99*time.Millisecond, h.Quantile(0.99))
	require.Equal(t, 100*time.Millisecond, h.Quantile(1))
	require.Equal(t, 100*time.Millisecond, h.Max())
	c := h.Clone()
	h.Observe(2 * time.Hour)
	require.Equal(t, uint64(101), c.Count(), "a clone is independent")
	require.Equal(t, 2*time.Hour, h.Max())
	require.Equal(t, 2*time.Hour, h.Quantile(1))
}
