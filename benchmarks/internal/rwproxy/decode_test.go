package rwproxy

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/stretchr/testify/require"
)

// referenceDecode counts a body with Prometheus's own decoders
// (storage/remote.DecodeWriteRequest and DecodeWriteV2Request; vmagent's
// zstd body unmarshalled into prompb.WriteRequest): what decode must
// agree with.
func referenceDecode(t *testing.T, p Protocol, body []byte) []sample {
	t.Helper()
	var out []sample
	v1 := func(req *prompb.WriteRequest) {
		for _, ts := range req.Timeseries {
			var name string
			for _, l := range ts.Labels {
				if l.Name == model.MetricNameLabel {
					name = l.Value
				}
			}
			for _, s := range ts.Samples {
				out = append(out, sample{report: IsReportSeries(name), ts: s.Timestamp, stale: value.IsStaleNaN(s.Value)})
			}
			for _, h := range ts.Histograms {
				out = append(out, sample{report: IsReportSeries(name), ts: h.Timestamp, stale: value.IsStaleNaN(h.Sum)})
			}
		}
	}
	switch p {
	case ProtocolV1:
		req, err := remote.DecodeWriteRequest(bytes.NewReader(body))
		require.NoError(t, err)
		v1(req)
	case ProtocolVMZstd:
		raw, err := zstdDecoder.DecodeAll(body, nil)
		require.NoError(t, err)
		var req prompb.WriteRequest
		require.NoError(t, proto.Unmarshal(raw, &req))
		v1(&req)
	case ProtocolV2:
		req, err := remote.DecodeWriteV2Request(bytes.NewReader(body))
		require.NoError(t, err)
		for _, ts := range req.Timeseries {
			var name string
			for i := 0; i+1 < len(ts.LabelsRefs); i += 2 {
				if req.Symbols[ts.LabelsRefs[i]] == model.MetricNameLabel {
					name = req.Symbols[ts.LabelsRefs[i+1]]
				}
			}
			for _, s := range ts.Samples {
				out = append(out, sample{report: IsReportSeries(name), ts: s.Timestamp, stale: value.IsStaleNaN(s.Value)})
			}
			for _, h := range ts.Histograms {
				out = append(out, sample{report: IsReportSeries(name), ts: h.Timestamp, stale: value.IsStaleNaN(h.Sum)})
			}
		}
	}
	return out
}

// randomSeries builds a request's series: names among target series, up
// and scrape_*, a few samples each, some staleness markers, some native
// histograms (integer and float), exemplars, labels in random order.
func randomSeries(rng *rand.Rand) []prompb.TimeSeries {
	names := []string{"node_cpu_seconds_total", "up", "scrape_duration_seconds", "scrape_samples_scraped", "upstream", "node_scrape_collector_success", "scraper_queue_length"}
	stale := math.Float64frombits(value.StaleNaN)
	var out []prompb.TimeSeries
	for range rng.IntN(40) {
		ls := []prompb.Label{{Name: "__name__", Value: names[rng.IntN(len(names))]}, {Name: "instance", Value: "127.1.0." + strconv.Itoa(rng.IntN(9)) + ":9100"}, {Name: "job", Value: "node"}}
		rng.Shuffle(len(ls), func(i, j int) { ls[i], ls[j] = ls[j], ls[i] })
		ts := prompb.TimeSeries{Labels: ls}
		t0 := int64(1_700_000_000_000 + rng.IntN(100_000))
		for i := range rng.IntN(4) {
			v := rng.Float64()
			if rng.IntN(5) == 0 {
				v = stale
			}
			ts.Samples = append(ts.Samples, prompb.Sample{Value: v, Timestamp: t0 + int64(i)*1000})
		}
		if rng.IntN(4) == 0 {
			sum := rng.Float64()
			if rng.IntN(3) == 0 {
				sum = stale
			}
			h := prompb.Histogram{Count: &prompb.Histogram_CountInt{CountInt: 3}, Sum: sum, Schema: 1, Timestamp: t0 + 500,
				PositiveSpans: []prompb.BucketSpan{{Offset: 0, Length: 2}}, PositiveDeltas: []int64{1, 1}}
			if rng.IntN(2) == 0 {
				h.Count = &prompb.Histogram_CountFloat{CountFloat: 3}
				h.PositiveDeltas, h.PositiveCounts = nil, []float64{1, 2}
			}
			ts.Histograms = append(ts.Histograms, h)
		}
		if rng.IntN(5) == 0 {
			ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{Labels: []prompb.Label{{Name: "trace_id", Value: "abc"}}, Value: 1, Timestamp: t0})
		}
		out = append(out, ts)
	}
	return out
}

func v2Of(ts []prompb.TimeSeries) *writev2.Request {
	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	for _, s := range ts {
		b := labels.NewScratchBuilder(len(s.Labels))
		for _, l := range s.Labels {
			b.Add(l.Name, l.Value)
		}
		b.Sort()
		out := writev2.TimeSeries{LabelsRefs: st.SymbolizeLabels(b.Labels(), nil)}
		for _, sm := range s.Samples {
			out.Samples = append(out.Samples, writev2.Sample{Value: sm.Value, Timestamp: sm.Timestamp})
		}
		for _, h := range s.Histograms {
			if h.IsFloatHistogram() {
				out.Histograms = append(out.Histograms, writev2.FromFloatHistogram(0, h.Timestamp, h.ToFloatHistogram()))
			} else {
				out.Histograms = append(out.Histograms, writev2.FromIntHistogram(0, h.Timestamp, h.ToIntHistogram()))
			}
		}
		req.Timeseries = append(req.Timeseries, out)
	}
	req.Symbols = st.Symbols()
	return req
}

// TestDecodeMatchesPrometheus: on random requests of every protocol, the
// wire walk yields exactly the samples Prometheus's decoders yield.
func TestDecodeMatchesPrometheus(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	zenc, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	for i := range 200 {
		ts := randomSeries(rng)
		raw1, err := (&prompb.WriteRequest{Timeseries: ts}).Marshal()
		require.NoError(t, err)
		raw2, err := v2Of(ts).Marshal()
		require.NoError(t, err)
		for p, body := range map[Protocol][]byte{
			ProtocolV1:     snappy.Encode(nil, raw1),
			ProtocolVMZstd: zenc.EncodeAll(raw1, nil),
			ProtocolV2:     snappy.Encode(nil, raw2),
		} {
			want := referenceDecode(t, p, body)
			var got []sample
			require.NoError(t, decode(p, body, func(s sample) { got = append(got, s) }), "request %d, %s", i, p)
			if len(want) == 0 {
				require.Empty(t, got)
				continue
			}
			require.Equal(t, want, got, "request %d, %s", i, p)
		}
	}
}

// TestDecodeFieldOrder: a message with its fields out of the usual order
// (samples before labels, symbols after the series) still decodes.
func TestDecodeFieldOrder(t *testing.T) {
	// TimeSeries with samples (field 2) first, then labels (field 1).
	sampleMsg, err := (&prompb.Sample{Value: 1, Timestamp: 42}).Marshal()
	require.NoError(t, err)
	labelMsg, err := (&prompb.Label{Name: "__name__", Value: "up"}).Marshal()
	require.NoError(t, err)
	var ts []byte
	ts = appendField(ts, 2, sampleMsg)
	ts = appendField(ts, 1, labelMsg)
	req := appendField(nil, 1, ts)
	var got []sample
	require.NoError(t, decode(ProtocolV1, snappy.Encode(nil, req), func(s sample) { got = append(got, s) }))
	require.Equal(t, []sample{{report: true, ts: 42}}, got)

	// v2 with the series (field 5) before the symbols (field 4).
	v2 := v2Of([]prompb.TimeSeries{{Labels: []prompb.Label{{Name: "__name__", Value: "scrape_x"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 7}}}})
	seriesMsg, err := v2.Timeseries[0].Marshal()
	require.NoError(t, err)
	var body []byte
	body = appendField(body, 5, seriesMsg)
	for _, s := range v2.Symbols {
		body = appendField(body, 4, []byte(s))
	}
	got = nil
	require.NoError(t, decode(ProtocolV2, snappy.Encode(nil, body), func(s sample) { got = append(got, s) }))
	require.Equal(t, []sample{{report: true, ts: 7}}, got)
}

func appendField(b []byte, num int, v []byte) []byte {
	b = append(b, byte(num<<3|2))
	b = appendVarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Protocol
		body []byte
	}{
		{"not snappy", ProtocolV1, []byte("plain text")},
		{"not zstd", ProtocolVMZstd, []byte("plain text")},
		{"truncated message", ProtocolV1, snappy.Encode(nil, []byte{0x0a, 0x10, 0x01})},
		{"bad tag", ProtocolV1, snappy.Encode(nil, []byte{0x00})},
		{"v2 reference beyond the symbols", ProtocolV2, snappy.Encode(nil, appendField(nil, 5, []byte{0x0a, 0x02, 0x00, 0x05}))},
		{"v2 odd references", ProtocolV2, snappy.Encode(nil, append(appendField(nil, 4, []byte("__name__")), appendField(nil, 5, []byte{0x0a, 0x01, 0x00})...))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Error(t, decode(tc.p, tc.body, func(sample) {}))
		})
	}
}
