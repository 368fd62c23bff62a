package shardscrapev1_test

import (
	"context"
	"net"
	"testing"

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

const scrapeConfigYAML = `job_name: etcd
scheme: https
basic_auth:
  username: monitor
  password: s3cret-etcd
static_configs:
  - targets: ["10.0.0.7:2379"]
`

// watchServer streams one snapshot carrying a scrape config, and rejects an
// unknown lease the way the contract says.
type watchServer struct {
	shardscrapev1.UnimplementedWorkerServiceServer
}

func (watchServer) WatchAssignments(req *shardscrapev1.WatchAssignmentsRequest, stream grpc.ServerStreamingServer[shardscrapev1.AssignmentUpdate]) error {
	if req.GetLeaseEpoch() != 7 {
		return status.Error(codes.FailedPrecondition, "lease expired; join again")
	}
	return stream.Send(&shardscrapev1.AssignmentUpdate{
		Generation: 1,
		Snapshot:   true,
		Configs:    []*shardscrapev1.ScrapeConfig{{Hash: "h1", JobName: "etcd", Yaml: []byte(scrapeConfigYAML)}},
		Upserts: []*shardscrapev1.Target{{
			Id:         0xfeed,
			ConfigHash: "h1",
			Labels:     []*shardscrapev1.Label{{Name: "__address__", Value: "10.0.0.7:2379"}},
			State:      shardscrapev1.TargetState_TARGET_STATE_INCOMING,
		}},
	})
}

// The contract carries a scrape config's original bytes because Prometheus
// masks secrets when it marshals a parsed config: credentials must survive
// coordinator → worker, and the worker must parse them with Prometheus's own
// config package.
func TestScrapeConfigCarriesCredentials(t *testing.T) {
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

	// A stale lease is refused with the documented code.
	stream, err := client.WatchAssignments(t.Context(), &shardscrapev1.WatchAssignmentsRequest{WorkerId: "scraper-0", LeaseEpoch: 6})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.FailedPrecondition, status.Code(err))

	stream, err = client.WatchAssignments(t.Context(), &shardscrapev1.WatchAssignmentsRequest{WorkerId: "scraper-0", LeaseEpoch: 7})
	require.NoError(t, err)
	update, err := stream.Recv()
	require.NoError(t, err)
	require.True(t, update.GetSnapshot())
	require.Equal(t, shardscrapev1.TargetState_TARGET_STATE_INCOMING, update.GetUpserts()[0].GetState())
	require.Equal(t, update.GetConfigs()[0].GetHash(), update.GetUpserts()[0].GetConfigHash())

	// The worker side: parse the received bytes as Prometheus does.
	cfg, err := config.Load("scrape_configs:\n- "+indent(update.GetConfigs()[0].GetYaml()), nil)
	require.NoError(t, err)
	require.Len(t, cfg.ScrapeConfigs, 1)
	require.Equal(t, "s3cret-etcd", string(cfg.ScrapeConfigs[0].HTTPClientConfig.BasicAuth.Password))

	// Re-marshalling the parsed config, as a naive coordinator would, loses
	// the secret: this is why the contract sends the original bytes.
	remarshalled, err := yaml.Marshal(cfg.ScrapeConfigs[0])
	require.NoError(t, err)
	require.Contains(t, string(remarshalled), "<secret>")
	require.NotContains(t, string(remarshalled), "s3cret-etcd")
}

// indent prefixes every line after the first with two spaces, to nest a
// scrape config under a list item.
func indent(b []byte) string {
	out := make([]byte, 0, len(b)+64)
	for i, c := range b {
		out = append(out, c)
		if c == '\n' && i < len(b)-1 {
			out = append(out, ' ', ' ')
		}
	}
	return string(out)
}
