package shardscrapev1_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

const (
	globalYAML = `global:
  scrape_interval: 7s
  external_labels:
    region: eu
remote_write:
- url: http://vm:8428/api/v1/write
`
	scrapeConfigYAML = `job_name: etcd
scheme: https
basic_auth:
  username: monitor
  password: s3cret-etcd
`
	apiserverYAML = `job_name: apiserver
authorization:
  credentials_file: secrets/token
`
)

// watchServer streams one snapshot in two parts, and refuses a stale lease
// as the contract says.
type watchServer struct {
	shardscrapev1.UnimplementedWorkerServiceServer
}

func (watchServer) WatchAssignments(req *shardscrapev1.WatchAssignmentsRequest, stream grpc.ServerStreamingServer[shardscrapev1.WatchAssignmentsResponse]) error {
	if req.GetLeaseEpoch() != 7 {
		return status.Error(codes.FailedPrecondition, "lease expired; join again")
	}
	parts := []*shardscrapev1.WatchAssignmentsResponse{{
		Generation: 41, Snapshot: true, Partial: true,
		Global: &shardscrapev1.GlobalConfig{
			Hash:           "g1",
			Yaml:           []byte(globalYAML),
			ExternalLabels: []*shardscrapev1.Label{{Name: "cluster_name", Value: "prod-1"}},
			ConfigDir:      "/etc/prometheus",
		},
		Configs: []*shardscrapev1.ScrapeConfig{
			{Hash: "h1", JobName: "etcd", Yaml: []byte(scrapeConfigYAML)},
			{Hash: "h2", JobName: "apiserver", Yaml: []byte(apiserverYAML)},
		},
	}, {
		Generation: 41, Snapshot: true,
		Upserts: []*shardscrapev1.Target{{
			Id:     0xfeed,
			Job:    "etcd",
			Labels: []*shardscrapev1.Label{{Name: "__address__", Value: "10.0.0.7:2379"}},
			State:  shardscrapev1.TargetState_TARGET_STATE_INCOMING,
		}},
	}}
	for _, p := range parts {
		if err := stream.Send(p); err != nil {
			return err
		}
	}
	return nil
}

// The contract carries configs as their original text because Prometheus
// masks secrets when it marshals a parsed config: credentials must survive
// coordinator → worker, and the worker rebuilds the config with Prometheus's
// own config package as GlobalConfig describes.
func TestWorkerRebuildsConfigFromStream(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	shardscrapev1.RegisterWorkerServiceServer(srv, watchServer{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	client := shardscrapev1.NewWorkerServiceClient(conn)

	stream, err := client.WatchAssignments(t.Context(), &shardscrapev1.WatchAssignmentsRequest{WorkerId: "scraper-0", LeaseEpoch: 6})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.FailedPrecondition, status.Code(err))

	// Collect the parts of one update, as a worker does.
	stream, err = client.WatchAssignments(t.Context(), &shardscrapev1.WatchAssignmentsRequest{WorkerId: "scraper-0", LeaseEpoch: 7})
	require.NoError(t, err)
	var global *shardscrapev1.GlobalConfig
	var configs []*shardscrapev1.ScrapeConfig
	var targets []*shardscrapev1.Target
	for {
		part, err := stream.Recv()
		require.NoError(t, err)
		require.True(t, part.GetSnapshot())
		require.Equal(t, uint64(41), part.GetGeneration())
		if part.GetGlobal() != nil {
			global = part.GetGlobal()
		}
		configs = append(configs, part.GetConfigs()...)
		targets = append(targets, part.GetUpserts()...)
		if !part.GetPartial() {
			break
		}
	}
	require.Len(t, targets, 1)
	require.Equal(t, "etcd", targets[0].GetJob())

	// Rebuild: global text, every scrape config under scrape_configs, then
	// the coordinator's directory for relative file paths.
	var text strings.Builder
	text.Write(global.GetYaml())
	text.WriteString("scrape_configs:\n")
	for _, c := range configs {
		text.WriteString("- " + strings.ReplaceAll(strings.TrimSpace(string(c.GetYaml())), "\n", "\n  ") + "\n")
	}
	cfg, err := config.Load(text.String(), nil)
	require.NoError(t, err)
	cfg.SetDirectory(global.GetConfigDir())

	require.Len(t, cfg.ScrapeConfigs, 2)
	etcd, apiserver := cfg.ScrapeConfigs[0], cfg.ScrapeConfigs[1]
	require.Equal(t, model.Duration(7*time.Second), etcd.ScrapeInterval, "global defaults apply")
	require.Equal(t, "s3cret-etcd", string(etcd.HTTPClientConfig.BasicAuth.Password), "credentials survive")
	require.Equal(t, "/etc/prometheus/secrets/token", apiserver.HTTPClientConfig.Authorization.CredentialsFile)
	require.Equal(t, "eu", cfg.GlobalConfig.ExternalLabels.Get("region"))

	// Re-marshalling the parsed config, as a naive coordinator would, loses
	// the secret: this is why the contract sends the original text.
	remarshalled, err := yaml.Marshal(etcd)
	require.NoError(t, err)
	require.Contains(t, string(remarshalled), "<secret>")
	require.NotContains(t, string(remarshalled), "s3cret-etcd")
}
