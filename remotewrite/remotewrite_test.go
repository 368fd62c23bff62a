package remotewrite

import (
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/require"
)

func TestEndpointRemoteWriteConfig(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ep          Endpoint
		wantURL     string
		wantMsg     remoteapi.WriteMessageType
		wantHeaders map[string]string
	}{
		{
			name:    "victoriametrics base URL gets the write path, 1.0",
			ep:      Endpoint{URL: "http://vm:8428", Receiver: VictoriaMetrics},
			wantURL: "http://vm:8428/api/v1/write",
			wantMsg: remoteapi.WriteV1MessageType,
		},
		{
			name:    "empty receiver is victoriametrics",
			ep:      Endpoint{URL: "https://vm.example/"},
			wantURL: "https://vm.example/api/v1/write",
			wantMsg: remoteapi.WriteV1MessageType,
		},
		{
			name:    "a path is kept (vminsert)",
			ep:      Endpoint{URL: "http://vminsert:8480/insert/42/prometheus/api/v1/write", Receiver: VictoriaMetrics},
			wantURL: "http://vminsert:8480/insert/42/prometheus/api/v1/write",
			wantMsg: remoteapi.WriteV1MessageType,
		},
		{
			name:        "thanos-receive: receive path, 1.0, default tenant header",
			ep:          Endpoint{URL: "http://thanos:19291", Receiver: ThanosReceive, Tenant: "team-a"},
			wantURL:     "http://thanos:19291/api/v1/receive",
			wantMsg:     remoteapi.WriteV1MessageType,
			wantHeaders: map[string]string{"THANOS-TENANT": "team-a"},
		},
		{
			name:        "thanos-receive: custom tenant header",
			ep:          Endpoint{URL: "http://thanos:19291", Receiver: ThanosReceive, Tenant: "team-b", TenantHeader: "X-Scope-OrgID"},
			wantURL:     "http://thanos:19291/api/v1/receive",
			wantMsg:     remoteapi.WriteV1MessageType,
			wantHeaders: map[string]string{"X-Scope-OrgID": "team-b"},
		},
		{
			name:    "thanos-receive without tenant: Thanos's default tenant, no header",
			ep:      Endpoint{URL: "http://thanos:19291", Receiver: ThanosReceive, TenantHeader: "X-Ignored"},
			wantURL: "http://thanos:19291/api/v1/receive",
			wantMsg: remoteapi.WriteV1MessageType,
		},
		{
			name:    "prometheus: write path, 2.0",
			ep:      Endpoint{URL: "http://prom:9090", Receiver: Prometheus, Name: "prom"},
			wantURL: "http://prom:9090/api/v1/write",
			wantMsg: remoteapi.WriteV2MessageType,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rw, err := tc.ep.RemoteWriteConfig()
			require.NoError(t, err)
			require.Equal(t, tc.wantURL, rw.URL.String())
			require.Equal(t, tc.wantMsg, rw.ProtobufMessage)
			require.Equal(t, tc.wantHeaders, rw.Headers)
			require.Equal(t, tc.ep.Name, rw.Name)
			require.Equal(t, DefaultQueueConfig(), rw.QueueConfig)
			// Everything else is Prometheus's default remote_write.
			want := config.DefaultRemoteWriteConfig
			require.Equal(t, want.RemoteTimeout, rw.RemoteTimeout)
			require.Equal(t, want.MetadataConfig, rw.MetadataConfig)
			require.Equal(t, want.HTTPClientConfig, rw.HTTPClientConfig)
		})
	}
}

func TestEndpointRemoteWriteConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ep      Endpoint
		wantErr string
	}{
		{"empty URL", Endpoint{}, "endpoint URL is empty"},
		{"unparsable URL", Endpoint{URL: "http://[::1"}, `endpoint URL "http://[::1"`},
		{"no scheme", Endpoint{URL: "vm:8428"}, `scheme "vm", want http or https`},
		{"ftp", Endpoint{URL: "ftp://vm"}, `scheme "ftp"`},
		{"no host", Endpoint{URL: "http:///api/v1/write"}, "no host"},
		{"unknown receiver", Endpoint{URL: "http://x", Receiver: "influx"}, `unknown remote-write receiver "influx"`},
		{"tenant for victoriametrics", Endpoint{URL: "http://vm", Tenant: "t"}, `tenant "t": only the thanos-receive receiver`},
		{"tenant for prometheus", Endpoint{URL: "http://p", Receiver: Prometheus, Tenant: "t"}, `tenant "t"`},
		{"bad header name", Endpoint{URL: "http://t", Receiver: ThanosReceive, Tenant: "t", TenantHeader: "THANOS TENANT"}, `tenant header "THANOS TENANT" is not a valid HTTP header name`},
		{"reserved header (Prometheus's check)", Endpoint{URL: "http://t", Receiver: ThanosReceive, Tenant: "t", TenantHeader: "Content-Type"}, "reserved header"},
		{"authorization header (Prometheus's check)", Endpoint{URL: "http://t", Receiver: ThanosReceive, Tenant: "t", TenantHeader: "Authorization"}, "authorization header"},
		{"newline in tenant", Endpoint{URL: "http://t", Receiver: ThanosReceive, Tenant: "a\nb"}, "control characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.ep.RemoteWriteConfig()
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

// TestErrorsHideThePassword: a URL's password (basic auth in the user info)
// never appears in an error, which ends up in logs.
func TestErrorsHideThePassword(t *testing.T) {
	for _, ep := range []Endpoint{
		{URL: "ftp://user:s3cret@vm:8428"},
		{URL: "http://user:s3cret@[::1"},
		{URL: "http://user:s3cret@[::1/api/v1/write"},
		{URL: "http://user:s3cret@vm:8428", Receiver: "influx"},
		{URL: "http://user:s3cret@vm:8428", Tenant: "t"},
		{URL: "http://user:s3cret@t", Receiver: ThanosReceive, Tenant: "t", TenantHeader: "A B"},
		{URL: "http://user:s3cret@t", Receiver: ThanosReceive, Tenant: "a\nb"},
		{URL: "http://user:s3cret@t", Receiver: ThanosReceive, Tenant: "t", TenantHeader: "Content-Type"},
	} {
		_, err := ep.RemoteWriteConfig()
		require.Error(t, err, ep.URL)
		require.NotContains(t, err.Error(), "s3cret")
		require.Contains(t, err.Error(), "user:xxxxx@", "the URL is still named")
	}
	require.Equal(t, "http://vm:8428/x", redactURL("http://vm:8428/x"))
	require.Equal(t, "http://u@[::1", redactURL("http://u@[::1"))
	require.Equal(t, "not a url", redactURL("not a url"))
}

func TestParseReceiver(t *testing.T) {
	for _, r := range Receivers() {
		got, err := ParseReceiver(string(r))
		require.NoError(t, err)
		require.Equal(t, r, got)
	}
	_, err := ParseReceiver("VictoriaMetrics")
	require.ErrorContains(t, err, "want one of victoriametrics, thanos-receive, prometheus")
}

func TestVictoriaMetricsAndThanosNeverGet2_0(t *testing.T) {
	// VictoriaMetrics v1.151 answers 2.0 with 2xx and writes nothing; Thanos
	// Receive takes 1.0. Whatever else changes, these presets send 1.0.
	for _, r := range []Receiver{VictoriaMetrics, ThanosReceive} {
		require.Equal(t, remoteapi.WriteV1MessageType, r.ProtobufMessage(), r)
	}
	require.Equal(t, remoteapi.WriteV2MessageType, Prometheus.ProtobufMessage())
}

func TestDefaultQueueConfig(t *testing.T) {
	q := DefaultQueueConfig()
	require.NoError(t, q.Validate())
	require.NotEqual(t, config.DefaultQueueConfig, q)
	require.True(t, q.RetryOnRateLimit, "a 429 must be retried, not dropped")
	require.Zero(t, q.SampleAgeLimit, "samples must not be dropped for age")
	require.GreaterOrEqual(t, q.Capacity, 3*q.MaxSamplesPerSend)
	// The figures the doc comment and README derive from these values.
	latency := 100 * time.Millisecond
	require.Equal(t, 2_500_000, q.MaxShards*q.MaxSamplesPerSend*int(time.Second/latency))
	require.Equal(t, 1_250_000, q.MaxShards*(q.Capacity+q.MaxSamplesPerSend))
	// Each call returns a fresh value.
	q.MaxShards = 1
	require.Equal(t, 50, DefaultQueueConfig().MaxShards)
}

func TestApplyQueueDefaults(t *testing.T) {
	cfg, err := config.Load(`
remote_write:
  - url: http://untouched/api/v1/write
  - url: http://explicit-defaults/api/v1/write
    queue_config:
      max_shards: 50
      capacity: 10000
  - url: http://tuned/api/v1/write
    queue_config:
      max_shards: 7
`, nil)
	require.NoError(t, err)
	ApplyQueueDefaults(cfg)
	require.Equal(t, DefaultQueueConfig(), cfg.RemoteWriteConfigs[0].QueueConfig)
	require.Equal(t, DefaultQueueConfig(), cfg.RemoteWriteConfigs[1].QueueConfig, "values equal to Prometheus's defaults count as unset")
	tuned := config.DefaultQueueConfig
	tuned.MaxShards = 7
	require.Equal(t, tuned, cfg.RemoteWriteConfigs[2].QueueConfig, "a tuned queue_config is left alone")

	// A config without remote_write, and a nil entry, are fine.
	ApplyQueueDefaults(&config.Config{RemoteWriteConfigs: []*config.RemoteWriteConfig{nil}})
}

func TestFlags(t *testing.T) {
	parse := func(t *testing.T, args ...string) *Flags {
		t.Helper()
		app := kingpin.New("test", "")
		f := RegisterFlags(app)
		_, err := app.Parse(args)
		require.NoError(t, err)
		return f
	}
	fileCfg := func(t *testing.T) *config.Config {
		cfg, err := config.Load("remote_write:\n  - url: http://from-config/api/v1/write\n", nil)
		require.NoError(t, err)
		return cfg
	}

	t.Run("no flags: config's remote_write kept, queue defaults applied", func(t *testing.T) {
		cfg := fileCfg(t)
		require.NoError(t, parse(t).Apply(cfg))
		require.Len(t, cfg.RemoteWriteConfigs, 1)
		require.Equal(t, "http://from-config/api/v1/write", cfg.RemoteWriteConfigs[0].URL.String())
		require.Equal(t, DefaultQueueConfig(), cfg.RemoteWriteConfigs[0].QueueConfig)
	})

	t.Run("urls replace the config's remote_write", func(t *testing.T) {
		cfg := fileCfg(t)
		f := parse(t, "--remote-write.url=http://vm1:8428", "--remote-write.url=http://vm2:8428")
		require.Equal(t, string(VictoriaMetrics), f.Receiver)
		require.NoError(t, f.Apply(cfg))
		require.Len(t, cfg.RemoteWriteConfigs, 2)
		for i, want := range []string{"http://vm1:8428/api/v1/write", "http://vm2:8428/api/v1/write"} {
			require.Equal(t, want, cfg.RemoteWriteConfigs[i].URL.String())
			require.Equal(t, remoteapi.WriteV1MessageType, cfg.RemoteWriteConfigs[i].ProtobufMessage)
		}
	})

	t.Run("thanos with tenant", func(t *testing.T) {
		cfg := fileCfg(t)
		f := parse(t, "--remote-write.url=http://thanos:19291", "--remote-write.receiver=thanos-receive",
			"--remote-write.tenant=t1", "--remote-write.tenant-header=X-Tenant")
		require.NoError(t, f.Apply(cfg))
		require.Len(t, cfg.RemoteWriteConfigs, 1)
		require.Equal(t, "http://thanos:19291/api/v1/receive", cfg.RemoteWriteConfigs[0].URL.String())
		require.Equal(t, map[string]string{"X-Tenant": "t1"}, cfg.RemoteWriteConfigs[0].Headers)
	})

	t.Run("unknown receiver is a flag error", func(t *testing.T) {
		app := kingpin.New("test", "")
		RegisterFlags(app)
		_, err := app.Parse([]string{"--remote-write.receiver=influx"})
		require.ErrorContains(t, err, "influx")
	})

	t.Run("tenant without url", func(t *testing.T) {
		err := parse(t, "--remote-write.tenant=t1").Apply(fileCfg(t))
		require.ErrorContains(t, err, `--remote-write.tenant="t1" without --remote-write.url`)
	})

	t.Run("tenant for victoriametrics", func(t *testing.T) {
		cfg := fileCfg(t)
		err := parse(t, "--remote-write.url=http://vm", "--remote-write.tenant=t1").Apply(cfg)
		require.ErrorContains(t, err, `--remote-write.url: endpoint "http://vm": tenant "t1"`)
		require.Equal(t, "http://from-config/api/v1/write", cfg.RemoteWriteConfigs[0].URL.String(), "config changed on error")
	})

	t.Run("bad url", func(t *testing.T) {
		err := parse(t, "--remote-write.url=vm:8428").Apply(fileCfg(t))
		require.ErrorContains(t, err, `endpoint URL "vm:8428"`)
	})

	t.Run("registers on a command too", func(t *testing.T) {
		app := kingpin.New("test", "")
		cmd := app.Command("run", "")
		f := RegisterFlags(cmd)
		_, err := app.Parse([]string{"run", "--remote-write.url=http://p:9090", "--remote-write.receiver=prometheus"})
		require.NoError(t, err)
		eps, err := f.Endpoints()
		require.NoError(t, err)
		require.Equal(t, []Endpoint{{URL: "http://p:9090", Receiver: Prometheus, TenantHeader: DefaultTenantHeader}}, eps)
	})
}
