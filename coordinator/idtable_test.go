package coordinator

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
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
