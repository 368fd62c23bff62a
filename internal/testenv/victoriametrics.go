package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/prometheus/model/labels"
)

// VictoriaMetrics is a running VictoriaMetrics single-node with its data in
// a t.TempDir(). Stop and Start (the embedded Process's Stop, this type's
// Start) restart it on the same address and data directory.
type VictoriaMetrics struct {
	*Process
	// URL is the base URL, http://127.0.0.1:<port>.
	URL string
	// DataDir is the -storageDataPath.
	DataDir string

	api promv1.API
}

// StartVictoriaMetrics starts bin/victoria-metrics on a free 127.0.0.1 port
// and waits for /health. Written data is queryable at once: the response
// cache is off (-search.disableCache), -search.latencyOffset is 0 and
// ForceFlush makes buffered rows searchable. extraArgs are appended (a later
// flag overrides an earlier one).
func StartVictoriaMetrics(t testing.TB, extraArgs ...string) *VictoriaMetrics {
	t.Helper()
	bin := Binary(t, VictoriaMetricsBinary)
	dataDir := filepath.Join(t.TempDir(), "vm-data")
	args := func(addr string) []string {
		return append([]string{
			"-httpListenAddr=" + addr,
			"-storageDataPath=" + dataDir,
			"-retentionPeriod=100y", // tests may write samples with old timestamps
			"-search.latencyOffset=0",
			"-search.disableCache",
			"-memory.allowedBytes=256MiB",
			"-loggerLevel=WARN",
			"-http.shutdownDelay=0",
			"-inmemoryDataFlushInterval=1s",
		}, extraArgs...)
	}
	p, addr := startOnFreePort(t, bin, args, "/health")
	vm := &VictoriaMetrics{Process: p, URL: "http://" + addr, DataDir: dataDir}
	client, err := api.NewClient(api.Config{Address: vm.URL})
	if err != nil {
		t.Fatalf("testenv: query client for %s: %v", vm.URL, err)
	}
	vm.api = promv1.NewAPI(client)
	return vm
}

// Start starts the stopped VictoriaMetrics again on the same address and
// data directory and waits until /health answers.
func (vm *VictoriaMetrics) Start() error {
	if err := vm.Process.Start(); err != nil {
		return err
	}
	return vm.waitReady(context.Background(), vm.URL+"/health")
}

// WriteURL is the remote-write (1.0) endpoint, <URL>/api/v1/write.
func (vm *VictoriaMetrics) WriteURL() string { return vm.URL + "/api/v1/write" }

// API returns a Prometheus HTTP API client (query, query_range, series,
// labels) for this VictoriaMetrics. Call ForceFlush first to see rows
// received in the last second.
func (vm *VictoriaMetrics) API() promv1.API { return vm.api }

// ForceFlush makes every row received so far searchable
// (/internal/force_flush).
func (vm *VictoriaMetrics) ForceFlush(ctx context.Context) error {
	return get(ctx, vm.URL+"/internal/force_flush", nil)
}

// Series is one exported time series: its labels and raw samples in
// timestamp order. A NaN value is a NaN sample, which includes Prometheus
// staleness markers (VictoriaMetrics exports both as null).
type Series struct {
	Labels     labels.Labels
	Timestamps []int64 // milliseconds
	Values     []float64
}

// Export returns the raw samples of every series matching the selector
// between start and end (inclusive) from /api/v1/export, after a ForceFlush.
// A zero start or end leaves that bound open.
func (vm *VictoriaMetrics) Export(ctx context.Context, match string, start, end time.Time) ([]Series, error) {
	if err := vm.ForceFlush(ctx); err != nil {
		return nil, err
	}
	q := url.Values{"match[]": {match}}
	if !start.IsZero() {
		q.Set("start", unixSeconds(start))
	}
	if !end.IsZero() {
		q.Set("end", unixSeconds(end))
	}
	var out []Series
	err := get(ctx, vm.URL+"/api/v1/export?"+q.Encode(), func(body io.Reader) error {
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 0, 1<<20), 256<<20)
		for sc.Scan() {
			if len(sc.Bytes()) == 0 {
				continue
			}
			s, err := parseExportLine(sc.Bytes())
			if err != nil {
				return err
			}
			out = append(out, s)
		}
		return sc.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("export %q: %w", match, err)
	}
	return mergeSeries(out), nil // one series may come in several blocks
}

// unixSeconds formats t as Unix seconds with millisecond precision.
func unixSeconds(t time.Time) string {
	ms := t.UnixMilli()
	return fmt.Sprintf("%d.%03d", ms/1000, ms%1000)
}

// SampleCounts returns the number of raw samples per series matching the
// selector, keyed by the series' labels.String() ({__name__="m", a="b"}).
func (vm *VictoriaMetrics) SampleCounts(ctx context.Context, match string) (map[string]int, error) {
	series, err := vm.Export(ctx, match, time.Time{}, time.Time{})
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int, len(series))
	for _, s := range series {
		counts[s.Labels.String()] += len(s.Timestamps)
	}
	return counts, nil
}

// mergeSeries joins blocks of the same series that were not adjacent in the
// export and sorts each series' samples by timestamp.
func mergeSeries(in []Series) []Series {
	byKey := make(map[string]int, len(in))
	var out []Series
	for _, s := range in {
		k := s.Labels.String()
		if i, ok := byKey[k]; ok {
			out[i].Timestamps = append(out[i].Timestamps, s.Timestamps...)
			out[i].Values = append(out[i].Values, s.Values...)
			continue
		}
		byKey[k] = len(out)
		out = append(out, s)
	}
	for i := range out {
		sortSamples(&out[i])
	}
	return out
}

func sortSamples(s *Series) {
	// Insertion sort: blocks are already sorted, so this is near-linear.
	for i := 1; i < len(s.Timestamps); i++ {
		for j := i; j > 0 && s.Timestamps[j-1] > s.Timestamps[j]; j-- {
			s.Timestamps[j-1], s.Timestamps[j] = s.Timestamps[j], s.Timestamps[j-1]
			s.Values[j-1], s.Values[j] = s.Values[j], s.Values[j-1]
		}
	}
}

func parseExportLine(line []byte) (Series, error) {
	var raw struct {
		Metric     map[string]string `json:"metric"`
		Values     []json.RawMessage `json:"values"`
		Timestamps []int64           `json:"timestamps"`
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		return Series{}, fmt.Errorf("export line %.200q: %w", line, err)
	}
	if len(raw.Values) != len(raw.Timestamps) {
		return Series{}, fmt.Errorf("export line %.200q: %d values for %d timestamps", line, len(raw.Values), len(raw.Timestamps))
	}
	s := Series{Labels: labels.FromMap(raw.Metric), Timestamps: raw.Timestamps, Values: make([]float64, len(raw.Values))}
	for i, v := range raw.Values {
		switch string(v) {
		case "null":
			s.Values[i] = math.NaN()
		case `"Infinity"`:
			s.Values[i] = math.Inf(1)
		case `"-Infinity"`:
			s.Values[i] = math.Inf(-1)
		default:
			f, err := strconv.ParseFloat(string(v), 64)
			if err != nil {
				return Series{}, fmt.Errorf("export line %.200q: value %q: %w", line, v, err)
			}
			s.Values[i] = f
		}
	}
	return s, nil
}

var httpClient = &http.Client{Timeout: time.Minute}

// get GETs u and hands the body of a 2xx answer to read (nil: discard).
func get(ctx context.Context, u string, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, body)
	}
	if read == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return read(resp.Body)
}
