package kubeapi_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/shardscrape/shardscrape/internal/fake"
	"github.com/shardscrape/shardscrape/internal/fake/kubeapi"
)

// BenchmarkFleet loads a 5,000-node × 30-pod cluster (what cmd/fleetsim
// simulates) and measures a full pod list over HTTP, and the churn of one
// pod with a node-scoped watch open per node... kept to one watch here.
func BenchmarkFleet(b *testing.B) {
	const nodes, perNode = 5000, 30
	s := kubeapi.New(kubeapi.Options{})
	objs := make([]runtime.Object, 0, nodes*(perNode+1))
	for n := range nodes {
		node := fmt.Sprintf("node-%d", n)
		objs = append(objs, kubeapi.NewNode(node, fmt.Sprintf("10.0.%d.%d", n>>8, n&255), map[string]string{"zone": "z"}))
		for p := range perNode {
			i := n*perNode + p
			objs = append(objs, kubeapi.NewPod("ns", fmt.Sprintf("pod-%d", i), node, fmt.Sprintf("10.%d.%d.%d", 1+i>>16, i>>8&255, i&255),
				map[string]string{"app": "a"}, map[string]string{"prometheus.io/scrape": "true"}, corev1.ContainerPort{Name: "m", ContainerPort: 9100}))
		}
	}
	b.Run("apply", func(b *testing.B) {
		for b.Loop() {
			require.NoError(b, s.Apply(objs...))
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(objs)), "ns/object")
	})
	srv, err := fake.Serve(s)
	require.NoError(b, err)
	defer srv.Close()
	b.Run("list-pods", func(b *testing.B) {
		for b.Loop() {
			resp, err := http.Get(srv.URL + "/api/v1/pods")
			require.NoError(b, err)
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			b.ReportMetric(float64(n)/(1<<20), "MiB")
		}
	})
	b.Run("list-node-pods", func(b *testing.B) {
		for b.Loop() {
			resp, err := http.Get(srv.URL + "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-17")
			require.NoError(b, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
