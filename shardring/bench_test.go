package shardring

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func testMembers(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{ID: fmt.Sprintf("scraper-%d", i)}
	}
	return ms
}

func randomKeys(n int, seed uint64) []uint64 {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	keys := make([]uint64, n)
	for i := range keys {
		keys[i] = rng.Uint64()
	}
	return keys
}

func movedFraction(tb testing.TB, prev, next *Assignment) float64 {
	moves, err := Diff(prev, next)
	require.NoError(tb, err)
	return float64(len(moves)) / float64(prev.Len())
}

// churnFigures measures, over trials joins and trials leaves, the fraction
// of keys that move when one member joins and when one leaves, each over its
// ideal (1/(M+1) and 1/M): the mean and the worst.
func churnFigures(tb testing.TB, r *Ring, keys []uint64, trials int) (join, leave, worstJoin, worstLeave float64) {
	base := r.Assign(keys)
	m := len(r.members)
	for t := range trials {
		joined, err := r.With(Member{ID: fmt.Sprintf("joiner-%d", t)})
		require.NoError(tb, err)
		j := movedFraction(tb, base, joined.Assign(keys)) * float64(m+1)

		left, err := r.Without(r.members[(t*m)/trials].ID)
		require.NoError(tb, err)
		l := movedFraction(tb, base, left.Assign(keys)) * float64(m)

		join, leave = join+j, leave+l
		worstJoin, worstLeave = max(worstJoin, j), max(worstLeave, l)
	}
	return join / float64(trials), leave / float64(trials), worstJoin, worstLeave
}

// BenchmarkAssign times a full bounded-load Assign of unsorted keys and
// reports the balance and movement figures of that size (movement averaged
// over three joins and three leaves).
func BenchmarkAssign(b *testing.B) {
	for _, size := range []struct{ keys, members int }{
		{10_000, 10},
		{100_000, 50},
		{1_000_000, 200},
	} {
		b.Run(fmt.Sprintf("keys=%d/members=%d", size.keys, size.members), func(b *testing.B) {
			keys := randomKeys(size.keys, 1)
			r, err := New(testMembers(size.members), Options{})
			require.NoError(b, err)
			imbalance := r.Assign(keys).Imbalance()
			join, leave, _, _ := churnFigures(b, r, keys, 3)

			b.ReportAllocs()
			for b.Loop() {
				r.Assign(keys)
			}
			b.ReportMetric(imbalance, "max/mean")
			b.ReportMetric(join, "moved-join/ideal")
			b.ReportMetric(leave, "moved-leave/ideal")
		})
	}
}

// BenchmarkRebuild times deriving the ring after one member joins or leaves,
// and building it from scratch.
func BenchmarkRebuild(b *testing.B) {
	b.Run("members=200", func(b *testing.B) {
		r, err := New(testMembers(200), Options{})
		require.NoError(b, err)
		b.Run("join", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, err := r.With(Member{ID: "scraper-joiner"})
				require.NoError(b, err)
			}
		})
		b.Run("leave", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, err := r.Without("scraper-100")
				require.NoError(b, err)
			}
		})
		b.Run("new", func(b *testing.B) {
			ms := testMembers(200)
			b.ReportAllocs()
			for b.Loop() {
				_, err := New(ms, Options{})
				require.NoError(b, err)
			}
		})
	})
}

var tradeoff = flag.Bool("shardring.tradeoff", false, "print the virtual nodes × load factor trade-off table (slow)")

// TestTradeoff prints, as a markdown table, the measured curve behind
// DefaultVirtualNodes and DefaultLoadFactor at 1M keys × 200 members:
//
//	go test ./shardring -run Tradeoff -shardring.tradeoff -v
func TestTradeoff(t *testing.T) {
	if !*tradeoff {
		t.Skip("enable with -shardring.tradeoff")
	}
	const nKeys, nMembers, trials = 1_000_000, 200, 8
	keys := randomKeys(nKeys, 1)
	fmt.Printf("| virtual nodes | c | assign ms (best of 3) | max/mean | moved-join/ideal mean (worst of %d) | moved-leave/ideal mean (worst of %d) |\n", trials, trials)
	fmt.Println("|---:|---:|---:|---:|---:|---:|")
	for _, v := range []int{1024, 2048, 4096, 8192, 16384} {
		for _, c := range []float64{1.01, 1.02, 1.03, 1.05, 1.10, 1000} {
			r, err := New(testMembers(nMembers), Options{VirtualNodes: v, LoadFactor: c})
			require.NoError(t, err)
			best := time.Duration(math.MaxInt64)
			var a *Assignment
			for range 3 {
				start := time.Now()
				a = r.Assign(keys)
				best = min(best, time.Since(start))
			}
			join, leave, worstJoin, worstLeave := churnFigures(t, r, keys, trials)
			label := fmt.Sprint(c)
			if c == 1000 {
				label = "none"
			}
			fmt.Printf("| %d | %s | %.1f | %.4f | %.4f (%.4f) | %.4f (%.4f) |\n",
				v, label, best.Seconds()*1000, a.Imbalance(), join, worstJoin, leave, worstLeave)
		}
	}
}
