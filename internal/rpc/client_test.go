package rpc

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

func TestIsLoopbackTarget(t *testing.T) {
	for target, want := range map[string]bool{
		"127.0.0.1:9094":                  true,
		"127.8.9.1:9094":                  true,
		"localhost:9094":                  true,
		"[::1]:9094":                      true,
		"dns:///localhost:9094":           true,
		"dns://8.8.8.8/localhost:9094":    true,
		"passthrough:///127.0.0.1:1":      true,
		"ipv4:127.0.0.1:1,127.0.0.2:2":    true,
		"unix:///run/shardscrape.sock":    true,
		"unix-abstract:shardscrape":       true,
		"coordinator:9094":                false,
		"10.0.0.1:9094":                   false,
		"dns:///coordinator.svc:9094":     false,
		"ipv4:127.0.0.1:1,10.0.0.2:2":     false,
		"localhost.example.com:9094":      false,
		"[::ffff:10.0.0.1]:9094":          false,
		"":                                false,
		"passthrough:///":                 false,
		"dns:///[2001:db8::1]:9094":       false,
		"127.0.0.1.example.com:9094":      false,
		"xds:///coordinator":              false,
		"k8s://coordinator.default:9094":  false,
		"dns://resolver/coordinator:9094": false,
	} {
		require.Equal(t, want, IsLoopbackTarget(target), target)
	}
}

func TestDialRefusesPlaintextTokenToTheNetwork(t *testing.T) {
	tok := writeToken(t, t.TempDir(), "token", "t")
	_, err := Dial("coordinator.example:9094", ClientOptions{AuthTokenFile: tok})
	require.ErrorContains(t, err, "plaintext")

	for _, opts := range []ClientOptions{
		{AuthTokenFile: tok, InsecureToken: true},
		{AuthTokenFile: tok, TLS: true},
	} {
		cc, err := Dial("coordinator.example:9094", opts)
		require.NoError(t, err)
		require.NoError(t, cc.Close())
	}
	cc, err := Dial("127.0.0.1:9094", ClientOptions{AuthTokenFile: tok})
	require.NoError(t, err)
	require.NoError(t, cc.Close())

	_, err = Dial("127.0.0.1:9094", ClientOptions{AuthTokenFile: filepath.Join(t.TempDir(), "missing")})
	require.ErrorContains(t, err, "missing")
	_, err = Dial("127.0.0.1:9094", ClientOptions{TLSCertFile: tok})
	require.ErrorContains(t, err, "key")
}

func TestFlags(t *testing.T) {
	app := kingpin.New("test", "")
	var so ServerOptions
	var co ClientOptions
	so.AddFlags(app, "grpc")
	co.AddFlags(app, "coordinator")

	_, err := app.Parse(nil)
	require.NoError(t, err)
	require.Equal(t, DefaultServerOptions(), so, "the flags' defaults are DefaultServerOptions")
	require.Equal(t, ClientOptions{Address: DefaultCoordinatorAddress}, co)

	_, err = app.Parse([]string{
		"--grpc.listen-address=127.0.0.1:1",
		"--grpc.auth-token-file=/w",
		"--grpc.admin-token-file=/a",
		"--grpc.tls-cert-file=/c",
		"--grpc.tls-key-file=/k",
		"--grpc.tls-client-ca-file=/ca",
		"--grpc.max-recv-msg-size=32MiB",
		"--grpc.max-send-msg-size=512KB",
		"--grpc.graceful-stop-timeout=3s",
		"--grpc.keepalive.min-time=20s",
		"--coordinator.address=dns:///coordinator:9094",
		"--coordinator.auth-token-file=/t",
		"--coordinator.tls",
		"--coordinator.tls-ca-file=/ca",
		"--coordinator.tls-cert-file=/cc",
		"--coordinator.tls-key-file=/ck",
		"--coordinator.tls-server-name=coordinator",
		"--coordinator.insecure-token",
	})
	require.NoError(t, err)
	want := DefaultServerOptions()
	want.ListenAddress, want.AuthTokenFile, want.AdminTokenFile = "127.0.0.1:1", "/w", "/a"
	want.TLSCertFile, want.TLSKeyFile, want.TLSClientCAFile = "/c", "/k", "/ca"
	want.MaxRecvMsgSize, want.MaxSendMsgSize = 32<<20, 512<<10
	want.GracefulStopTimeout, want.KeepaliveMinTime = 3*time.Second, 20*time.Second
	require.Equal(t, want, so)
	require.Equal(t, ClientOptions{
		Address: "dns:///coordinator:9094", AuthTokenFile: "/t", TLS: true, TLSCAFile: "/ca",
		TLSCertFile: "/cc", TLSKeyFile: "/ck", TLSServerName: "coordinator", InsecureToken: true,
	}, co)

	for _, bad := range []string{"--grpc.max-recv-msg-size=lots", "--grpc.max-recv-msg-size=0", "--grpc.max-send-msg-size=4GiB"} {
		_, err = app.Parse([]string{bad})
		require.Error(t, err, bad)
	}
}

func TestClientMetrics(t *testing.T) {
	ts := startServer(t, ServerOptions{})
	reg := prometheus.NewRegistry()
	dopts, err := ClientMetricsDialOptions(reg)
	require.NoError(t, err)
	cc := dial(t, ts.address, ClientOptions{DialOptions: dopts})
	wc := shardscrapev1.NewWorkerServiceClient(cc)
	_, err = wc.Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "w"})
	require.NoError(t, err)
	_, err = wc.Join(callCtx(t), &shardscrapev1.JoinRequest{WorkerId: "panic"})
	require.Error(t, err)
	require.Equal(t, 1.0, metricValue(t, reg, "shardscrape_grpc_client_handled_total", map[string]string{"grpc_method": "Join", "grpc_code": "OK"}))
	require.Equal(t, 1.0, metricValue(t, reg, "shardscrape_grpc_client_handled_total", map[string]string{"grpc_method": "Join", "grpc_code": "Internal"}))
	require.Equal(t, 2.0, metricValue(t, reg, "shardscrape_grpc_client_handling_seconds", map[string]string{"grpc_method": "Join"}))

	_, err = ClientMetricsDialOptions(reg)
	require.Error(t, err, "a second registration on one registry fails")
}
