//go:build pins

// Package pins holds go.mod to the libraries the design requires, at the
// versions the foundation chose, before any code imports them: the
// coordinator and scraper work may proceed in parallel, and both start from
// one go.mod and go.sum. `make unit` builds it (go build -tags pins) to prove
// they compile together. Drop an import here once real code imports that
// package.
package pins

import (
	_ "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	_ "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	_ "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	_ "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	_ "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	_ "github.com/oklog/run"
	_ "github.com/prometheus/prometheus/discovery"
	_ "github.com/prometheus/prometheus/discovery/consul"
	_ "github.com/prometheus/prometheus/discovery/kubernetes"
	_ "github.com/prometheus/prometheus/model/relabel"
	_ "github.com/prometheus/prometheus/storage/remote"
	_ "github.com/prometheus/prometheus/tsdb/agent"
	_ "github.com/thanos-io/objstore"
	_ "github.com/thanos-io/objstore/client"
	_ "google.golang.org/grpc/health"
	_ "k8s.io/client-go/tools/leaderelection"
)
