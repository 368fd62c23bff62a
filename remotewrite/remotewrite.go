// Package remotewrite turns a receiver endpoint into Prometheus's remote-write
// configuration: a preset per receiver (VictoriaMetrics, Thanos Receive,
// Prometheus) fixing the URL path, the protobuf message and the headers it
// needs, and queue settings sized for a worker scraping tens of thousands of
// targets. Encoding, queueing, sharding and retries are Prometheus's
// storage/remote; this package only builds its *config.RemoteWriteConfig, by
// the same YAML parsing a remote_write entry in prometheus.yml goes through.
package remotewrite

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"go.yaml.in/yaml/v2"
)

// Receiver names a remote-write receiver preset.
type Receiver string

// The receiver presets.
const (
	// VictoriaMetrics (single-node /api/v1/write, or vminsert behind a
	// path given in the URL) takes remote-write 1.0 only. VictoriaMetrics
	// v1.151 answers a 2.0 request with 2xx but writes nothing, so this
	// preset never sends 2.0.
	VictoriaMetrics Receiver = "victoriametrics"
	// ThanosReceive is Thanos Receive's /api/v1/receive with remote-write
	// 1.0 and a tenant header.
	ThanosReceive Receiver = "thanos-receive"
	// Prometheus is a Prometheus server started with
	// --web.enable-remote-write-receiver, written with remote-write 2.0.
	Prometheus Receiver = "prometheus"
)

// DefaultTenantHeader is the header Thanos Receive reads the tenant from
// (its --receive.tenant-header default).
const DefaultTenantHeader = "THANOS-TENANT"

// Receivers returns every preset, in a stable order.
func Receivers() []Receiver { return []Receiver{VictoriaMetrics, ThanosReceive, Prometheus} }

// ParseReceiver returns the preset named s.
func ParseReceiver(s string) (Receiver, error) {
	r := Receiver(s)
	if !slices.Contains(Receivers(), r) {
		return "", fmt.Errorf("unknown remote-write receiver %q (want one of %s)", s, receiverList())
	}
	return r, nil
}

func receiverList() string {
	names := make([]string, 0, 3)
	for _, r := range Receivers() {
		names = append(names, string(r))
	}
	return strings.Join(names, ", ")
}

// Path is the receiver's write path, appended to an endpoint URL that has
// none.
func (r Receiver) Path() string {
	if r == ThanosReceive {
		return "/api/v1/receive"
	}
	return "/api/v1/write"
}

// ProtobufMessage is the remote-write message the receiver is sent:
// prometheus.WriteRequest (1.0) for VictoriaMetrics and Thanos Receive,
// io.prometheus.write.v2.Request (2.0) for Prometheus.
func (r Receiver) ProtobufMessage() remoteapi.WriteMessageType {
	if r == Prometheus {
		return remoteapi.WriteV2MessageType
	}
	return remoteapi.WriteV1MessageType
}

// Endpoint is one remote-write destination.
type Endpoint struct {
	// URL of the receiver, http or https. With no path (or "/") the
	// receiver's Path is appended; a URL with a path is used as given
	// (vminsert's /insert/<tenant>/prometheus/api/v1/write, a proxy).
	URL string
	// Receiver is the preset; empty means VictoriaMetrics.
	Receiver Receiver
	// Tenant is sent in TenantHeader (Thanos Receive only).
	Tenant string
	// TenantHeader carries Tenant; empty means DefaultTenantHeader.
	TenantHeader string
	// Name is the remote_write name (the remote_name label of Prometheus's
	// prometheus_remote_storage_* metrics); empty lets Prometheus name the
	// queue by the config's hash.
	Name string
}

// RemoteWriteConfig builds the endpoint's remote-write configuration:
// Prometheus's defaults for everything the preset does not set, and
// DefaultQueueConfig. Bad input gives an error naming the field and value.
func (e Endpoint) RemoteWriteConfig() (*config.RemoteWriteConfig, error) {
	r := e.Receiver
	if r == "" {
		r = VictoriaMetrics
	}
	shown := redactURL(e.URL)
	if _, err := ParseReceiver(string(r)); err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", shown, err)
	}
	u, err := endpointURL(e.URL, r)
	if err != nil {
		return nil, err
	}
	var headers map[string]string
	switch {
	case e.Tenant != "" && r != ThanosReceive:
		return nil, fmt.Errorf("endpoint %q: tenant %q: only the %s receiver takes a tenant header (VictoriaMetrics cluster takes it in the URL path)", shown, e.Tenant, ThanosReceive)
	case e.Tenant != "":
		h := e.TenantHeader
		if h == "" {
			h = DefaultTenantHeader
		}
		if !validHeaderName(h) {
			return nil, fmt.Errorf("endpoint %q: tenant header %q is not a valid HTTP header name", shown, h)
		}
		if strings.ContainsAny(e.Tenant, "\r\n\x00") {
			return nil, fmt.Errorf("endpoint %q: tenant %q: control characters are not allowed in a header value", shown, e.Tenant)
		}
		headers = map[string]string{h: e.Tenant}
	}

	// Go through Prometheus's own remote_write parsing: its defaults, its
	// validation (reserved headers, protobuf message, queue settings), the
	// exact value a hand-written prometheus.yml entry would produce.
	doc, err := yaml.Marshal(rwYAML{
		URL:             u,
		Name:            e.Name,
		Headers:         headers,
		ProtobufMessage: string(r.ProtobufMessage()),
		QueueConfig:     DefaultQueueConfig(),
	})
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", shown, err)
	}
	var rw config.RemoteWriteConfig
	if err := yaml.UnmarshalStrict(doc, &rw); err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", shown, err)
	}
	return &rw, nil
}

// rwYAML is the remote_write entry a preset writes.
type rwYAML struct {
	URL             string             `yaml:"url"`
	Name            string             `yaml:"name,omitempty"`
	Headers         map[string]string  `yaml:"headers,omitempty"`
	ProtobufMessage string             `yaml:"protobuf_message"`
	QueueConfig     config.QueueConfig `yaml:"queue_config"`
}

func endpointURL(raw string, r Receiver) (string, error) {
	if raw == "" {
		return "", errors.New("endpoint URL is empty")
	}
	shown := redactURL(raw)
	u, err := url.Parse(raw)
	if err != nil {
		// Not err itself: a *url.Error repeats the URL, password included.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", fmt.Errorf("endpoint URL %q: %w", shown, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("endpoint URL %q: scheme %q, want http or https", shown, u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("endpoint URL %q: no host", shown)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = r.Path()
		u.RawPath = ""
	}
	return u.String(), nil
}

// redactURL returns raw fit for errors and logs: a password in its user
// info (http://user:pass@host) is masked, as Prometheus masks it, even when
// raw does not parse.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		if _, ok := u.User.Password(); ok {
			return u.Redacted()
		}
		return raw
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return raw
	}
	user, _, hasPassword := strings.Cut(authority[:at], ":")
	if !hasPassword {
		return raw
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// DefaultQueueConfig returns the queue settings for a worker scraping tens
// of thousands of targets. Prometheus sizes its defaults for one server;
// a worker has more series per second and must not lose data through a
// receiver outage (invariant 6), so:
//
//   - MaxSamplesPerSend 5000 (Prometheus: 2000): fewer, larger requests,
//     about 150–400 KiB snappy-compressed for typical label sets, well
//     within VictoriaMetrics' and Thanos Receive's request limits.
//   - Capacity 20000 (4 × MaxSamplesPerSend, inside Prometheus's advice of
//     3–10×): a shard keeps a full batch queued while one is in flight.
//   - MaxShards 50 (Prometheus's): throughput ceiling MaxShards ×
//     MaxSamplesPerSend / request latency = 50 × 5000 / 100 ms = 2.5M
//     samples/s, ten times a heavy worker's steady rate (20,000 targets ×
//     500 series / 30 s ≈ 333k samples/s), which is headroom to catch up
//     after an outage. Memory ceiling MaxShards × (Capacity +
//     MaxSamplesPerSend) = 1.25M queued samples, roughly 100 MiB.
//   - MinShards 4 (Prometheus: 1): resharding looks at rates every 10 s and
//     grows gradually; a worker that starts with its whole share at once
//     begins at 4 × 5000 / 100 ms = 200k samples/s instead of 50k.
//   - BatchSendDeadline 5 s (Prometheus's): a busy shard fills a batch long
//     before; the deadline bounds the delay of quiet shards.
//   - MinBackoff 100 ms, MaxBackoff 5 s (Prometheus: 30 ms, 5 s): 50 shards
//     retrying a receiver that is coming back do not hammer it; doubling
//     from 100 ms reaches the 5 s cap in 6 retries, so delivery resumes at
//     most ~5 s after the receiver does.
//   - RetryOnRateLimit true (Prometheus: false): a 429 from an overloaded
//     receiver is retried, not dropped.
//   - SampleAgeLimit 0 (Prometheus's): samples are never dropped for age; the
//     agent WAL is the buffer through an outage.
func DefaultQueueConfig() config.QueueConfig {
	return config.QueueConfig{
		Capacity:          20000,
		MaxShards:         50,
		MinShards:         4,
		MaxSamplesPerSend: 5000,
		BatchSendDeadline: model.Duration(5 * time.Second),
		MinBackoff:        model.Duration(100 * time.Millisecond),
		MaxBackoff:        model.Duration(5 * time.Second),
		RetryOnRateLimit:  true,
		SampleAgeLimit:    0,
	}
}

// ApplyQueueDefaults replaces the queue_config of every remote_write entry
// whose queue_config is exactly Prometheus's default (written without one,
// or with Prometheus's values) by DefaultQueueConfig. An entry with any queue
// setting of its own was tuned by its author and is left alone.
func ApplyQueueDefaults(cfg *config.Config) {
	for _, rw := range cfg.RemoteWriteConfigs {
		if rw != nil && rw.QueueConfig == config.DefaultQueueConfig {
			rw.QueueConfig = DefaultQueueConfig()
		}
	}
}
