package rpc

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"
)

// BenchmarkAuthCheck is the per-call cost of token auth: a stat of the
// token file, two SHA-256 digests and a constant-time compare.
func BenchmarkAuthCheck(b *testing.B) {
	f := writeTokenB(b, "0123456789abcdef0123456789abcdef")
	a := &tokenAuth{
		logger:   slog.New(slog.DiscardHandler),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"reason"}),
		worker:   newWatchedFile(f),
	}
	require.NoError(b, a.load())
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer 0123456789abcdef0123456789abcdef"))
	b.ReportAllocs()
	for b.Loop() {
		if err := a.check(ctx, "shardscrape.v1.WorkerService"); err != nil {
			b.Fatal(err)
		}
	}
}

func writeTokenB(b *testing.B, tok string) string {
	f := filepath.Join(b.TempDir(), "token")
	require.NoError(b, os.WriteFile(f, []byte(tok), 0o600))
	return f
}
