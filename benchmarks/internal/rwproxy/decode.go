package rwproxy

import (
	"bytes"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/gogo/protobuf/proto"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage/remote"
)

// Protocol names a remote-write dialect the proxy decodes.
type Protocol string

// Protocols the proxy tells apart, from the request's headers.
const (
	// ProtocolV1 is Prometheus remote write 1.0: a snappy
	// prometheus.WriteRequest (Prometheus, the shardscrape scraper, and
	// vmagent when the receiver does not speak VictoriaMetrics' protocol).
	ProtocolV1 Protocol = "prw1.0+snappy"
	// ProtocolV2 is Prometheus remote write 2.0: a snappy
	// io.prometheus.write.v2.Request.
	ProtocolV2 Protocol = "prw2.0+snappy"
	// ProtocolVMZstd is vmagent's VictoriaMetrics remote-write protocol: the
	// same prometheus.WriteRequest as 1.0, zstd-compressed
	// (Content-Encoding: zstd).
	ProtocolVMZstd Protocol = "prw1.0+zstd"
)

// v2Message is the proto parameter of a remote-write 2.0 Content-Type.
const v2Message = "io.prometheus.write.v2.Request"

// protocolOf tells a write request's dialect from its headers:
// Content-Encoding zstd is vmagent's protocol, a Content-Type with
// proto=io.prometheus.write.v2.Request is 2.0, anything else is 1.0.
func protocolOf(h http.Header) Protocol {
	if strings.EqualFold(strings.TrimSpace(h.Get("Content-Encoding")), "zstd") {
		return ProtocolVMZstd
	}
	if _, params, err := mime.ParseMediaType(h.Get("Content-Type")); err == nil && params["proto"] == v2Message {
		return ProtocolV2
	}
	return ProtocolV1
}

// sample is what the proxy needs of one sample.
type sample struct {
	name  string
	ts    int64 // milliseconds
	stale bool
}

// zstdDecoder decodes whole zstd frames; DecodeAll is safe for concurrent
// use.
var zstdDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0))

// decode decodes body in protocol p with Prometheus's decoders and calls
// each for every float and histogram sample.
func decode(p Protocol, body []byte, each func(sample)) error {
	switch p {
	case ProtocolV2:
		req, err := remote.DecodeWriteV2Request(bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("decode %s body: %w", p, err)
		}
		for _, ts := range req.Timeseries {
			name, err := v2Name(req.Symbols, ts.LabelsRefs)
			if err != nil {
				return fmt.Errorf("decode %s body: %w", p, err)
			}
			for _, s := range ts.Samples {
				each(sample{name: name, ts: s.Timestamp, stale: value.IsStaleNaN(s.Value)})
			}
			for _, h := range ts.Histograms {
				each(sample{name: name, ts: h.Timestamp, stale: value.IsStaleNaN(h.Sum)})
			}
		}
		return nil
	case ProtocolVMZstd:
		raw, err := zstdDecoder.DecodeAll(body, nil)
		if err != nil {
			return fmt.Errorf("decode %s body: %w", p, err)
		}
		var req prompb.WriteRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			return fmt.Errorf("decode %s body: %w", p, err)
		}
		v1Samples(&req, each)
		return nil
	default:
		req, err := remote.DecodeWriteRequest(bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("decode %s body: %w", p, err)
		}
		v1Samples(req, each)
		return nil
	}
}

func v1Samples(req *prompb.WriteRequest, each func(sample)) {
	for _, ts := range req.Timeseries {
		var name string
		for _, l := range ts.Labels {
			if l.Name == model.MetricNameLabel {
				name = l.Value
				break
			}
		}
		for _, s := range ts.Samples {
			each(sample{name: name, ts: s.Timestamp, stale: value.IsStaleNaN(s.Value)})
		}
		for _, h := range ts.Histograms {
			each(sample{name: name, ts: h.Timestamp, stale: value.IsStaleNaN(h.Sum)})
		}
	}
}

// v2Name returns the __name__ of a 2.0 series from its label references.
func v2Name(symbols []string, refs []uint32) (string, error) {
	if len(refs)%2 != 0 {
		return "", fmt.Errorf("odd number of label references: %d", len(refs))
	}
	for i := 0; i < len(refs); i += 2 {
		k, v := refs[i], refs[i+1]
		if int(k) >= len(symbols) || int(v) >= len(symbols) {
			return "", fmt.Errorf("label reference %d/%d beyond %d symbols", k, v, len(symbols))
		}
		if symbols[k] == model.MetricNameLabel {
			return symbols[v], nil
		}
	}
	return "", nil
}

// IsReportSeries tells whether a metric name is one of the series a scraper
// adds to every scrape about the scrape itself (up, scrape_*), not one the
// target exposed.
func IsReportSeries(name string) bool {
	return name == "up" || strings.HasPrefix(name, "scrape_")
}
