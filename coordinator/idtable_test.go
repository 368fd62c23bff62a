package coordinator

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shardscrape/shardscrape/relabel"
)

// TestIDTable checks idTable against a map under random puts and deletes,
// with sequential ids (clustered) and random ones, growing and shrinking.
func TestIDTable(t *testing.T) {
	for _, seq := range []bool{true, false} {
		r := rand.New(rand.NewPCG(1, 2))
		m := newIDTable()
		want := map[uint64]*target{}
		id := func() uint64 {
			if seq {
				return uint64(r.IntN(3000))
			}
			return r.Uint64() % 3000 * 0x100000001b3
		}
		for round := range 20000 {
			k := id()
			switch {
			case round%5000 > 3500: // phases of mostly deletes: shrink
				m.del(k)
				delete(want, k)
			case r.IntN(3) == 0:
				m.del(k)
				delete(want, k)
			default:
				tg := &target{}
				m.put(k, tg)
				want[k] = tg
			}
			if round%997 == 0 {
				require.Equal(t, len(want), m.len())
				got := map[uint64]*target{}
				for k, v := range m.all() {
					got[k] = v
				}
				require.Equal(t, want, got)
			}
		}
		require.Equal(t, len(want), m.len())
		for k := range uint64(3000) {
			for _, k := range []uint64{k, k * 0x100000001b3} {
				require.Same(t, want[k], m.get(k), "id %d", k)
			}
		}
	}
}

// TestTargetTable checks targetTable against a map, changed through
// eachShard in parallel (run with -race) and through put and del.
func TestTargetTable(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	m := newTargetTable()
	want := map[uint64]*target{}
	for round := range 4 {
		ids := make([]uint64, 2*parallelMin)
		for i := range ids {
			ids[i] = r.Uint64() % 100_000
		}
		// Even rounds insert, odd rounds delete, by shard.
		m.eachShard(len(ids), func(shard int, s *idTable) {
			for _, id := range ids {
				if shardOf(id) != shard {
					continue
				}
				if round%2 == 0 {
					if s.get(id) == nil {
						s.put(id, &target{Target: relabel.Target{ID: id}})
					}
				} else {
					s.del(id)
				}
			}
		})
		for _, id := range ids {
			if round%2 == 0 {
				if want[id] == nil {
					want[id] = m.get(id)
				}
			} else {
				delete(want, id)
			}
		}
		id := r.Uint64()
		m.put(id, &target{})
		require.NotNil(t, m.get(id))
		m.del(id)
		require.Nil(t, m.get(id))
		require.Equal(t, len(want), m.len())
		got := map[uint64]*target{}
		for id, tg := range m.all() {
			require.Equal(t, id, tg.ID)
			got[id] = tg
		}
		require.Equal(t, want, got)
	}
}
