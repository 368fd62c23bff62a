package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/shardscrape/shardscrape/internal/testenv"
)

// victoriaMetrics is the one receiver of the run.
type victoriaMetrics struct {
	p   *proc
	url string
}

// startVM starts bin/victoria-metrics on a free loopback port with its data
// in dir. Written rows are searchable after forceFlush; the limits on
// series per query are raised for the sweep's millions of series.
func startVM(ctx context.Context, ps *procs, path, dir string) (*victoriaMetrics, error) {
	addr, err := testenv.FreeAddr()
	if err != nil {
		return nil, err
	}
	p, err := ps.start("victoria-metrics", filepath.Join(dir, "victoria-metrics.log"), path,
		"-httpListenAddr="+addr,
		"-storageDataPath="+filepath.Join(dir, "vm-data"),
		"-retentionPeriod=1d",
		"-search.latencyOffset=0",
		"-search.disableCache",
		"-search.maxUniqueTimeseries=50000000",
		"-search.maxQueryDuration=10m",
		"-memory.allowedBytes=2GiB",
		"-loggerLevel=WARN",
		"-http.shutdownDelay=0",
		"-inmemoryDataFlushInterval=1s",
	)
	if err != nil {
		return nil, err
	}
	vm := &victoriaMetrics{p: p, url: "http://" + addr}
	if err := p.waitReady(ctx, vm.url+"/health", 90*time.Second); err != nil {
		return nil, err
	}
	return vm, nil
}

// deliveredQuery counts the samples of a peer's run with timestamps in
// [from, to), up and scrape_* excluded: count_over_time over (to−1ms −
// (to−from), to−1ms]. VictoriaMetrics' rollups skip staleness markers.
func deliveredQuery(peer, run string, from, to time.Time) (query string, at time.Time) {
	window := to.Sub(from).Milliseconds()
	query = fmt.Sprintf(`sum(count_over_time({%s=%q,%s=%q,job=%q,__name__!~"up|scrape_.*"}[%dms]))`,
		labelPeer, peer, labelRun, run, jobName, window)
	return query, to.Add(-time.Millisecond)
}

// delivered asks VictoriaMetrics how many samples of the run it holds in
// [from, to).
func (vm *victoriaMetrics) delivered(ctx context.Context, peer, run string, from, to time.Time) (float64, error) {
	if err := vm.get(ctx, "/internal/force_flush", nil); err != nil {
		return 0, err
	}
	q, at := deliveredQuery(peer, run, from, to)
	v := url.Values{"query": {q}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	var body struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	err := vm.get(ctx, "/api/v1/query?"+v.Encode(), func(r io.Reader) error {
		return json.NewDecoder(r).Decode(&body)
	})
	if err != nil {
		return 0, fmt.Errorf("query %s: %w", q, err)
	}
	if len(body.Data.Result) == 0 {
		return 0, nil
	}
	s, _ := body.Data.Result[0].Value[1].(string)
	n, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("query %s: value %q: %w", q, s, err)
	}
	return n, nil
}

var vmClient = &http.Client{Timeout: 10 * time.Minute}

func (vm *victoriaMetrics) get(ctx context.Context, path string, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, vm.url+path, nil)
	if err != nil {
		return err
	}
	resp, err := vmClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	if read == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return read(resp.Body)
}
