package scraper

import (
	"fmt"
	"testing"

	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// bigSnapshot is a snapshot of n targets with pod-like discovered labels.
func bigSnapshot(n int) *pb.WatchAssignmentsResponse {
	s := &pb.WatchAssignmentsResponse{Generation: 1, Snapshot: true, Global: &pb.GlobalConfig{Hash: "g"},
		Configs: []*pb.ScrapeConfig{{Hash: "h", JobName: "pods", Yaml: []byte("job_name: pods\n")}}}
	for i := range n {
		s.Upserts = append(s.Upserts, &pb.Target{Id: uint64(i) * 0x9e3779b97f4a7c15, Job: "pods", State: active, Labels: []*pb.Label{
			{Name: "__address__", Value: fmt.Sprintf("10.%d.%d.%d:9100", i>>16&255, i>>8&255, i&255)},
			{Name: "__meta_kubernetes_namespace", Value: fmt.Sprintf("ns-%d", i%50)},
			{Name: "__meta_kubernetes_pod_name", Value: fmt.Sprintf("app-%d-7f9c8d6b5-x2x%d", i%300, i)},
			{Name: "__meta_kubernetes_pod_node_name", Value: fmt.Sprintf("node-%d", i%500)},
			{Name: "__meta_kubernetes_pod_label_app", Value: fmt.Sprintf("app-%d", i%300)},
			{Name: "__meta_kubernetes_pod_ip", Value: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)},
		}})
	}
	return s
}

// BenchmarkApplySnapshot: merging a snapshot and building the scrape
// manager's target groups (the assignment side of applying an update).
func BenchmarkApplySnapshot(b *testing.B) {
	for _, n := range []int{1000, 20000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := bigSnapshot(n)
			b.ReportAllocs()
			for b.Loop() {
				res, err := emptyAssignment().apply(s, nil)
				if err != nil {
					b.Fatal(err)
				}
				_ = res.next.targetGroups()
			}
		})
	}
}

// BenchmarkWriteState: persisting the assignment after an update (marshal,
// write, fsync, rename, fsync of the directory).
func BenchmarkWriteState(b *testing.B) {
	for _, n := range []int{1000, 20000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			res, err := emptyAssignment().apply(bigSnapshot(n), nil)
			if err != nil {
				b.Fatal(err)
			}
			dir := b.TempDir()
			b.ReportAllocs()
			for b.Loop() {
				if err := writeState(dir, res.next.snapshot()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
