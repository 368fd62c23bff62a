// Package rwproxy is a counting remote-write proxy for benchmarks: it sits
// between one remote-write sender (a scraper, a Prometheus agent, vmagent)
// and the real receiver, forwards every request unchanged and returns the
// receiver's answer unchanged, and on the way counts what arrived on the
// wire: requests, body bytes as sent (compressed), samples, and the delay
// from each sample's timestamp to its arrival. A write request's samples
// count (and their delay is observed, arrival being the time of the
// receiver's answer) only once the receiver accepted it with a 2xx; a
// request it refused (non-2xx) or could not be reached for counts in
// Rejected, so a sender's retries are counted once, when accepted.
//
// It decodes Prometheus remote write 1.0 (snappy prometheus.WriteRequest),
// 2.0 (snappy io.prometheus.write.v2.Request) and vmagent's VictoriaMetrics
// protocol (zstd prometheus.WriteRequest), walking the protobuf wire format
// without unmarshalling (it runs on the machine it measures); tests check
// its counts against Prometheus's own decoders. A body that does not decode
// is still forwarded, and counted as a decode error.
//
// Samples of the series a scraper adds about each scrape (up, scrape_*:
// IsReportSeries) and Prometheus staleness markers are counted apart from
// Samples and are not in the delay histograms.
package rwproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Options configure a Proxy.
type Options struct {
	// Target is the receiver's base URL (scheme, host and an optional path
	// prefix); a request's path and query are appended to it.
	Target string
	// Logger logs; nil discards.
	Logger *slog.Logger
	// Now is the clock of arrival times; nil is time.Now.
	Now func() time.Time
	// Client forwards requests; nil is a client with no timeout of its own
	// (the sender's request context bounds it).
	Client *http.Client
}

// Window is a span of sample timestamps, [From, To).
type Window struct {
	From, To time.Time
}

// Contains tells whether a millisecond timestamp is in the window.
func (w Window) Contains(ms int64) bool {
	return !w.From.IsZero() && ms >= w.From.UnixMilli() && ms < w.To.UnixMilli()
}

// Counts are the samples of one span.
type Counts struct {
	// Samples are float and histogram samples of the series the targets
	// exposed: not report series (up, scrape_*), not staleness markers.
	Samples uint64
	// ReportSamples are samples of up and scrape_* (staleness markers
	// excluded).
	ReportSamples uint64
	// StaleMarkers are staleness markers of any series.
	StaleMarkers uint64
	// Delay is arrival time − sample timestamp of every Samples sample.
	Delay Histogram
}

// Stats is what the proxy counted.
type Stats struct {
	// Requests is every request forwarded, whatever its method and path
	// (vmagent's protocol probe included).
	Requests uint64
	// WriteRequests are the POST requests with a body, which the proxy
	// decodes.
	WriteRequests uint64
	// BodyBytes is the size of the write requests' bodies as sent
	// (compressed).
	BodyBytes uint64
	// DecodeErrors are write requests whose body did not decode (still
	// forwarded); LastDecodeError says why.
	DecodeErrors    uint64
	LastDecodeError string
	// ForwardErrors are requests the receiver could not be reached for
	// (answered 502 to the sender).
	ForwardErrors uint64
	// Non2xx are requests the receiver answered with a status other than
	// 2xx.
	Non2xx uint64
	// RejectedWriteRequests are write requests not accepted (answered
	// non-2xx or not forwarded); Rejected counts their samples (all
	// timestamps), which are in neither All nor InWindow.
	RejectedWriteRequests uint64
	Rejected              Counts
	// Protocols counts write requests by dialect.
	Protocols map[Protocol]uint64
	// All counts every sample that arrived.
	All Counts
	// InWindow counts the samples whose timestamp is in Window.
	InWindow Counts
	// Window is the span set by SetWindow (zero: none).
	Window Window
	// MaxTimestamp is the newest sample timestamp seen (any series; zero
	// when none).
	MaxTimestamp time.Time
}

// WireSamples is every sample on the wire: samples, report samples and
// staleness markers.
func (c Counts) WireSamples() uint64 { return c.Samples + c.ReportSamples + c.StaleMarkers }

// Proxy forwards remote-write requests to one receiver and counts them.
// Use New, then ServeHTTP as a handler, or Start to serve it on a loopback
// port.
type Proxy struct {
	target *url.URL
	logger *slog.Logger
	now    func() time.Time
	client *http.Client

	mu    sync.Mutex
	stats Stats
	// inWindow is every InWindow sample by kind, timestamp and delay, so
	// that EndWindowAt can recount a shorter window.
	inWindow map[windowKey]uint64

	srv *http.Server
	ln  net.Listener
}

// New validates opts; it starts nothing.
func New(opts Options) (*Proxy, error) {
	u, err := url.Parse(opts.Target)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", opts.Target, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("target %q: want an http(s) URL with a host", opts.Target)
	}
	p := &Proxy{target: u, logger: opts.Logger, now: opts.Now, client: opts.Client}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.client == nil {
		p.client = &http.Client{Transport: &http.Transport{
			Proxy:               nil, // never an environment proxy: loopback only
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     time.Minute,
		}}
	}
	p.stats.Protocols = map[Protocol]uint64{}
	p.inWindow = map[windowKey]uint64{}
	return p, nil
}

// windowKey is one kind of sample at one timestamp that arrived with one
// delay (zero but for Samples).
type windowKey struct {
	report, stale bool
	ts            int64
	delay         time.Duration
}

// SetWindow sets the span of sample timestamps InWindow counts, and clears
// what InWindow counted before.
func (p *Proxy) SetWindow(w Window) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Window = w
	p.stats.InWindow = Counts{}
	p.inWindow = map[windowKey]uint64{}
}

// EndWindowAt shortens the window to [From, to) without losing what was
// counted: InWindow becomes the samples already counted whose timestamp is
// before to (delays as observed), and later arrivals count against the
// shorter window. to must lie within the current window.
func (p *Proxy) EndWindowAt(to time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.stats.Window
	if w.From.IsZero() || to.Before(w.From) || to.After(w.To) {
		return fmt.Errorf("end the window at %s: not within the window [%s, %s)", to, w.From, w.To)
	}
	w.To = to
	p.stats.Window = w
	p.stats.InWindow = Counts{}
	for k, n := range p.inWindow {
		if !w.Contains(k.ts) {
			delete(p.inWindow, k)
			continue
		}
		k.addTo(&p.stats.InWindow, n)
	}
	return nil
}

// addTo adds n samples of k's kind (and delay) to c.
func (k windowKey) addTo(c *Counts, n uint64) {
	switch {
	case k.stale:
		c.StaleMarkers += n
	case k.report:
		c.ReportSamples += n
	default:
		c.Samples += n
		c.Delay.ObserveN(k.delay, n)
	}
}

// Stats returns a copy of what the proxy counted so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Protocols = make(map[Protocol]uint64, len(p.stats.Protocols))
	for k, v := range p.stats.Protocols {
		s.Protocols[k] = v
	}
	s.All.Delay = p.stats.All.Delay.Clone()
	s.InWindow.Delay = p.stats.InWindow.Delay.Clone()
	return s
}

// maxBody bounds a request body the proxy reads (remote-write senders stay
// far below it).
const maxBody = 256 << 20

// hopHeaders are the hop-by-hop headers a proxy does not pass on.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// ServeHTTP counts the request, forwards it to the target and copies the
// target's answer back.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		http.Error(w, fmt.Sprintf("read body: %v", err), http.StatusBadRequest)
		return
	}
	if len(body) > maxBody {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	t := p.decode(r, body)

	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.forwardURL(r.URL), bytes.NewReader(body))
	if err != nil {
		p.add(t, false, time.Time{})
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	out.ContentLength = int64(len(body))
	resp, err := p.client.Do(out)
	if err != nil {
		p.mu.Lock()
		p.stats.ForwardErrors++
		p.mu.Unlock()
		p.add(t, false, time.Time{})
		p.logger.Warn("Forwarding to the receiver failed", "url", out.URL.String(), "err", err)
		http.Error(w, fmt.Sprintf("forward: %v", err), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	accepted := resp.StatusCode/100 == 2
	if !accepted {
		p.mu.Lock()
		p.stats.Non2xx++
		p.mu.Unlock()
	}
	// Arrival is the receiver's answer: a sample counts once accepted.
	p.add(t, accepted, p.now())
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	for _, h := range hopHeaders {
		w.Header().Del(h)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// forwardURL is the target with the request's path appended and its query.
func (p *Proxy) forwardURL(in *url.URL) string {
	u := *p.target
	u.Path = strings.TrimSuffix(p.target.Path, "/") + in.Path
	u.RawPath = ""
	u.RawQuery = in.RawQuery
	return u.String()
}

// tallyKey is one kind of sample at one timestamp: one scrape's samples
// share a timestamp.
type tallyKey struct {
	report, stale bool
	ts            int64
}

// tally is one request decoded, before the receiver answered.
type tally struct {
	write   bool // a POST with a body
	proto   Protocol
	bytes   int
	err     error
	maxTS   int64
	samples map[tallyKey]uint64
}

// decode decodes a write request (a POST with a body) into a tally, outside
// the lock; any other request is only counted by add.
func (p *Proxy) decode(r *http.Request, body []byte) tally {
	if r.Method != http.MethodPost || len(body) == 0 {
		return tally{}
	}
	t := tally{write: true, proto: protocolOf(r.Header), bytes: len(body), samples: map[tallyKey]uint64{}}
	t.err = decode(t.proto, body, func(s sample) {
		t.samples[tallyKey{report: s.report, stale: s.stale, ts: s.ts}]++
		t.maxTS = max(t.maxTS, s.ts)
	})
	if t.err != nil {
		t.samples = nil
	}
	return t
}

// add adds a request's tally to the stats: its samples to All and
// InWindow when the receiver accepted it (arrived is then its answer's
// time), to Rejected when not.
func (p *Proxy) add(t tally, accepted bool, arrived time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := &p.stats
	st.Requests++
	if !t.write {
		return
	}
	st.WriteRequests++
	st.BodyBytes += uint64(t.bytes)
	st.Protocols[t.proto]++
	if !accepted {
		st.RejectedWriteRequests++
	}
	if t.err != nil {
		st.DecodeErrors++
		st.LastDecodeError = t.err.Error()
		p.logger.Warn("Undecodable write request (forwarded anyway)", "protocol", t.proto, "bytes", t.bytes, "err", t.err)
		return
	}
	if !accepted {
		for k, n := range t.samples {
			switch {
			case k.stale:
				st.Rejected.StaleMarkers += n
			case k.report:
				st.Rejected.ReportSamples += n
			default:
				st.Rejected.Samples += n
			}
		}
		return
	}
	if t.maxTS > 0 && (st.MaxTimestamp.IsZero() || t.maxTS > st.MaxTimestamp.UnixMilli()) {
		st.MaxTimestamp = time.UnixMilli(t.maxTS)
	}
	for k, n := range t.samples {
		wk := windowKey{report: k.report, stale: k.stale, ts: k.ts}
		if !k.report && !k.stale {
			wk.delay = arrived.Sub(time.UnixMilli(k.ts))
		}
		wk.addTo(&st.All, n)
		if st.Window.Contains(k.ts) {
			wk.addTo(&st.InWindow, n)
			p.inWindow[wk] += n
		}
	}
}

// Start serves the proxy on a free 127.0.0.1 port until Close.
func (p *Proxy) Start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the remote-write proxy: %w", err)
	}
	p.ln = ln
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(p.logger.Handler(), slog.LevelDebug)}
	go func() {
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.logger.Error("Remote-write proxy stopped serving", "err", err)
		}
	}()
	return nil
}

// URL is the proxy's base URL once started (http://127.0.0.1:port).
func (p *Proxy) URL() string {
	if p.ln == nil {
		return ""
	}
	return "http://" + p.ln.Addr().String()
}

// Close stops serving, waiting up to ctx for requests in flight.
func (p *Proxy) Close(ctx context.Context) error {
	if p.srv == nil {
		return nil
	}
	return p.srv.Shutdown(ctx)
}
