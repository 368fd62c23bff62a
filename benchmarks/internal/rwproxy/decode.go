package rwproxy

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/value"
	"google.golang.org/protobuf/encoding/protowire"
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
	report bool  // of a report series (IsReportSeries)
	ts     int64 // milliseconds
	stale  bool  // a staleness marker
}

// zstdDecoder decodes whole zstd frames; DecodeAll is safe for concurrent
// use.
var zstdDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0))

// bufs recycles decompression buffers (a request is ~0.5–5 MB raw).
var bufs = sync.Pool{New: func() any { return new([]byte) }}

// decode decompresses body (snappy, or zstd for vmagent's protocol) and
// walks the protobuf message of protocol p, calling each for every float
// and histogram sample.
//
// The walk reads the wire format of prometheus.WriteRequest and
// io.prometheus.write.v2.Request directly (google.golang.org/protobuf's
// protowire) instead of unmarshalling them with prompb: that allocates
// every label string, ~1.9 KB per sample, and the proxy runs on the
// machine it measures. Tests check it against Prometheus's decoders
// (storage/remote.DecodeWriteRequest, DecodeWriteV2Request).
func decode(p Protocol, body []byte, each func(sample)) error {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	var (
		raw []byte
		err error
	)
	if p == ProtocolVMZstd {
		raw, err = zstdDecoder.DecodeAll(body, (*bp)[:0])
	} else {
		var n int
		if n, err = snappy.DecodedLen(body); err == nil {
			if cap(*bp) < n {
				*bp = make([]byte, n)
			}
			raw, err = snappy.Decode((*bp)[:n], body)
		}
	}
	if err != nil {
		return fmt.Errorf("decode %s body: decompress: %w", p, err)
	}
	*bp = raw[:0]
	if p == ProtocolV2 {
		err = walkV2(raw, each)
	} else {
		err = walkV1(raw, each)
	}
	if err != nil {
		return fmt.Errorf("decode %s body: %w", p, err)
	}
	return nil
}

// errWire is a malformed protobuf message.
var errWire = errors.New("malformed protobuf")

// fields calls f for every field of a message; f returns how many bytes of
// the value (after the tag) it consumed, or -1 to have it skipped.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte) int) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %w", errWire, protowire.ParseError(n))
		}
		b = b[n:]
		used := f(num, typ, b)
		if used < 0 {
			used = protowire.ConsumeFieldValue(num, typ, b)
		}
		if used < 0 {
			return fmt.Errorf("%w: field %d: %w", errWire, num, protowire.ParseError(used))
		}
		b = b[used:]
	}
	return nil
}

// message returns the bytes of a length-delimited field value and their
// length on the wire (-1: malformed, or not length-delimited).
func message(typ protowire.Type, v []byte) ([]byte, int) {
	if typ != protowire.BytesType {
		return nil, -1
	}
	return protowire.ConsumeBytes(v)
}

// walkV1 walks a prometheus.WriteRequest: timeseries = 1; a TimeSeries has
// labels = 1 (Label: name = 1, value = 2), samples = 2 (Sample: value = 1
// double, timestamp = 2 int64), histograms = 4 (sum = 3 double,
// timestamp = 15 int64).
func walkV1(raw []byte, each func(sample)) error {
	var serr error
	err := fields(raw, func(num protowire.Number, typ protowire.Type, v []byte) int {
		if num != 1 || serr != nil {
			return -1
		}
		ts, n := message(typ, v)
		if n < 0 {
			serr = fmt.Errorf("%w: timeseries", errWire)
			return -1
		}
		// Labels first (a sender may write fields in any order).
		var report bool
		if err := fields(ts, func(num protowire.Number, typ protowire.Type, v []byte) int {
			if num != 1 {
				return -1
			}
			l, n := message(typ, v)
			if n >= 0 {
				if name, value, ok := v1Label(l); ok && name == model.MetricNameLabel {
					report = isReportName(value)
				}
			}
			return n
		}); err != nil {
			serr = err
			return n
		}
		serr = samples(ts, 2, 4, report, each)
		return n
	})
	return errors.Join(err, serr)
}

// v1Label returns a Label's name and value without copying them.
func v1Label(b []byte) (name string, value []byte, ok bool) {
	var nb []byte
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte) int {
		s, n := message(typ, v)
		switch num {
		case 1:
			nb = s
		case 2:
			value = s
		default:
			return -1
		}
		return n
	})
	if err != nil || string(nb) != model.MetricNameLabel {
		return "", nil, err == nil
	}
	return model.MetricNameLabel, value, true
}

// samples calls each for the float samples (field sampleField: value = 1,
// timestamp = 2) and histograms (field histField: sum = 3, timestamp = 15)
// of one series.
func samples(ts []byte, sampleField, histField protowire.Number, report bool, each func(sample)) error {
	var serr error
	err := fields(ts, func(num protowire.Number, typ protowire.Type, v []byte) int {
		if num != sampleField && num != histField {
			return -1
		}
		m, n := message(typ, v)
		if n < 0 {
			serr = fmt.Errorf("%w: sample", errWire)
			return -1
		}
		valueField, tsField := protowire.Number(1), protowire.Number(2)
		if num == histField {
			valueField, tsField = 3, 15
		}
		s := sample{report: report}
		if err := fields(m, func(f protowire.Number, typ protowire.Type, v []byte) int {
			switch {
			case f == valueField && typ == protowire.Fixed64Type:
				bits, n := protowire.ConsumeFixed64(v)
				s.stale = n >= 0 && value.IsStaleNaN(math.Float64frombits(bits))
				return n
			case f == tsField && typ == protowire.VarintType:
				t, n := protowire.ConsumeVarint(v)
				s.ts = int64(t)
				return n
			}
			return -1
		}); err != nil {
			serr = err
			return n
		}
		each(s)
		return n
	})
	return errors.Join(err, serr)
}

// walkV2 walks an io.prometheus.write.v2.Request: symbols = 4,
// timeseries = 5; a TimeSeries has labels_refs = 1 (packed uint32 pairs
// into the symbols), samples = 2 (value = 1, timestamp = 2), histograms =
// 3 (sum = 3, timestamp = 15).
func walkV2(raw []byte, each func(sample)) error {
	// Symbols first (a sender may write them after the series).
	var symbols [][]byte
	if err := fields(raw, func(num protowire.Number, typ protowire.Type, v []byte) int {
		if num != 4 {
			return -1
		}
		s, n := message(typ, v)
		if n >= 0 {
			symbols = append(symbols, s)
		}
		return n
	}); err != nil {
		return err
	}
	var serr error
	err := fields(raw, func(num protowire.Number, typ protowire.Type, v []byte) int {
		if num != 5 || serr != nil {
			return -1
		}
		ts, n := message(typ, v)
		if n < 0 {
			serr = fmt.Errorf("%w: timeseries", errWire)
			return -1
		}
		var refs []uint64
		if err := fields(ts, func(num protowire.Number, typ protowire.Type, v []byte) int {
			if num != 1 {
				return -1
			}
			switch typ {
			case protowire.BytesType: // packed
				packed, n := protowire.ConsumeBytes(v)
				for len(packed) > 0 && n >= 0 {
					r, m := protowire.ConsumeVarint(packed)
					if m < 0 {
						return m
					}
					refs = append(refs, r)
					packed = packed[m:]
				}
				return n
			case protowire.VarintType:
				r, n := protowire.ConsumeVarint(v)
				refs = append(refs, r)
				return n
			}
			return -1
		}); err != nil {
			serr = err
			return n
		}
		if len(refs)%2 != 0 {
			serr = fmt.Errorf("%w: odd number of label references: %d", errWire, len(refs))
			return n
		}
		var report bool
		for i := 0; i < len(refs); i += 2 {
			k, v := refs[i], refs[i+1]
			if k >= uint64(len(symbols)) || v >= uint64(len(symbols)) {
				serr = fmt.Errorf("%w: label reference %d/%d beyond %d symbols", errWire, k, v, len(symbols))
				return n
			}
			if string(symbols[k]) == model.MetricNameLabel {
				report = isReportName(symbols[v])
			}
		}
		serr = samples(ts, 2, 3, report, each)
		return n
	})
	return errors.Join(err, serr)
}

// IsReportSeries tells whether a metric name is one of the series a scraper
// adds to every scrape about the scrape itself (up, scrape_*), not one the
// target exposed.
func IsReportSeries(name string) bool {
	return name == "up" || strings.HasPrefix(name, "scrape_")
}

func isReportName(b []byte) bool {
	return string(b) == "up" || bytes.HasPrefix(b, []byte("scrape_"))
}
