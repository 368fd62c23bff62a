package shardring

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Assignment maps every key given to Assign to exactly one member.
type Assignment struct {
	ring  *Ring
	owner []int32 // per key: index into ring.members
	loads []int   // per member
	caps  []int   // per member
}

// Assign gives each key one owner with bounded loads: no member gets more
// than ceil(c · len(keys) · weight / total weight) keys.
//
// Bounded loads are a stable matching (many-to-one deferred acceptance):
// each key proposes to the distinct members clockwise from it on the ring;
// a member over its bound keeps the keys it ranks best and rejects the rest,
// which propose to their next member. A member ranks keys first by how many
// members they tried before (its own ring keys first, so a spilled key never
// evicts a ring key), then by a hash of key and member. The key-optimal
// stable matching is unique, so the result depends only on the member set
// and the set of keys, not on their order; and a membership change spills
// only the keys near each member's bound.
//
// Keys are xxhash values of ownership keys. Equal keys are interchangeable
// and travel together; which of them spills follows their order. Assign
// takes at most 2^31-1 keys.
func (r *Ring) Assign(keys []uint64) *Assignment {
	a := &Assignment{
		ring:  r,
		owner: make([]int32, len(keys)),
		loads: make([]int, len(r.members)),
		caps:  r.capacities(len(keys)),
	}
	// Visit keys grouped by hash prefix so that reading them and walking the
	// ring's points and index are sequential, not a cache miss per key. A
	// coarse prefix keeps the grouping's write cursors within L2.
	for _, g := range groupByPrefix(keys, min(r.indexBits, keyGroupBits)) {
		o := r.owners[r.successor(g.h)]
		a.owner[g.pos] = o
		a.loads[o]++
	}
	if rejected := a.trimOverloaded(keys); len(rejected) > 0 {
		a.place(rejected)
	}
	return a
}

// keyGroupBits is the prefix Assign groups keys by: 4,096 write cursors stay
// in cache during the scatter, and a group's ring points (a few hundred)
// stay in cache during the walk. 11 to 16 bits measured within noise.
const keyGroupBits = 12

// capacities returns each member's bound for n keys.
func (r *Ring) capacities(n int) []int {
	caps := make([]int, len(r.members))
	for i, m := range r.members {
		// The factor below 1 keeps a product such as 5100.000000001 from
		// rounding up to one more key than c allows. No member needs more
		// than n, and clamping there keeps a huge c from overflowing.
		f := r.opts.LoadFactor * float64(n) * m.weight() / r.weight * (1 - 1e-12)
		caps[i] = n
		if f < float64(n) {
			caps[i] = int(math.Ceil(f))
		}
	}
	return caps
}

// candidate is a key proposing to a member, with every equal key that
// proposes along with it: equal keys walk the same path, so one walk serves
// them all however many there are.
type candidate struct {
	rank  int32  // members this key tried before this one
	point int32  // ring point of the member proposed to
	prio  uint64 // the member's preference: lower is better
	key   uint64
	pos   []int32 // indexes into the keys given to Assign, ascending
	tried []int32
}

// compareCandidates orders candidates best first for the member they
// propose to. Equal keys rank by position, as if each proposed alone.
func compareCandidates(a, b candidate) int {
	if c := cmp.Compare(a.rank, b.rank); c != 0 {
		return c
	}
	if c := cmp.Compare(a.prio, b.prio); c != 0 {
		return c
	}
	if c := cmp.Compare(a.key, b.key); c != 0 {
		return c
	}
	return cmp.Compare(a.pos[0], b.pos[0])
}

// trimOverloaded is the first round of deferred acceptance: every member
// above its bound keeps its best ring keys and rejects the rest.
func (a *Assignment) trimOverloaded(keys []uint64) []candidate {
	r := a.ring
	// ringKey is one key of rank 0: the over-bound members hold some hundred
	// thousand of them, of which only a few hundred spill, so selection works
	// on these compact records.
	type ringKey struct {
		prio, key uint64
		pos       int32
	}
	compare := func(a, b ringKey) int {
		return cmp.Or(cmp.Compare(a.prio, b.prio), cmp.Compare(a.key, b.key), cmp.Compare(a.pos, b.pos))
	}
	lists := make([][]ringKey, len(r.members))
	over := false
	for m, l := range a.loads {
		if l > a.caps[m] {
			lists[m] = make([]ringKey, 0, l)
			over = true
		}
	}
	if !over {
		return nil
	}
	for j, k := range keys {
		if o := a.owner[j]; lists[o] != nil {
			lists[o] = append(lists[o], ringKey{prio: mix64(k ^ r.seeds[o]), key: k, pos: int32(j)})
		}
	}
	var rejected []candidate
	for m, l := range lists {
		if l == nil {
			continue
		}
		selectBest(l, a.caps[m], compare)
		spilled := l[a.caps[m]:]
		slices.SortFunc(spilled, compare) // equal keys become adjacent, by position
		for i := 0; i < len(spilled); {
			k := spilled[i]
			c := candidate{prio: k.prio, key: k.key, point: int32(r.successor(k.key)), tried: []int32{int32(m)}}
			for ; i < len(spilled) && spilled[i].key == k.key; i++ {
				c.pos = append(c.pos, spilled[i].pos)
			}
			rejected = append(rejected, c)
		}
		a.loads[m] = a.caps[m]
	}
	return rejected
}

// place runs the later rounds of deferred acceptance until every rejected
// key is held by a member with room.
func (a *Assignment) place(rejected []candidate) {
	r := a.ring
	held := map[int32][]candidate{} // keys members took from other members' arcs
	for len(rejected) > 0 {
		proposals := map[int32][]candidate{}
		for _, c := range rejected {
			c = r.next(c)
			m := c.tried[len(c.tried)-1]
			proposals[m] = append(proposals[m], c)
		}
		rejected = nil
		// Member order only decides the order of the rejected list, which the
		// stable matching does not depend on; sort anyway for reproducibility.
		members := make([]int32, 0, len(proposals))
		for m := range proposals {
			members = append(members, m)
		}
		slices.Sort(members)
		for _, m := range members {
			ps := proposals[m]
			if free := a.caps[m] - a.loads[m]; units(ps) <= free {
				held[m] = append(held[m], ps...)
				a.loads[m] += units(ps)
				continue
			}
			// Over the bound: keep the best units that fit beside the ring
			// keys, splitting a group of equal keys at the boundary.
			room := a.caps[m] - (a.loads[m] - units(held[m]))
			all := append(held[m], ps...)
			slices.SortFunc(all, compareCandidates)
			var keep []candidate
			for _, c := range all {
				switch fit := room - units(keep); {
				case fit >= len(c.pos):
					keep = append(keep, c)
				case fit > 0:
					in, out := c, c
					in.pos, out.pos = c.pos[:fit], c.pos[fit:]
					keep = append(keep, in)
					rejected = append(rejected, out)
				default:
					rejected = append(rejected, c)
				}
			}
			held[m] = keep
			a.loads[m] = a.caps[m]
		}
	}
	for m, cs := range held {
		for _, c := range cs {
			for _, p := range c.pos {
				a.owner[p] = m
			}
		}
	}
}

// units counts the keys in cs.
func units(cs []candidate) int {
	n := 0
	for _, c := range cs {
		n += len(c.pos)
	}
	return n
}

// next moves c on to the next member clockwise that it has not tried.
func (r *Ring) next(c candidate) candidate {
	for step := 1; step <= len(r.points); step++ {
		i := (int(c.point) + step) % len(r.points)
		o := r.owners[i]
		if slices.Contains(c.tried, o) {
			continue
		}
		c.rank = int32(len(c.tried))
		c.point = int32(i)
		c.prio = mix64(c.key ^ r.seeds[o])
		// A group split at a boundary shares its tried slice: copy, never
		// append in place.
		c.tried = append(slices.Clip(c.tried), o)
		return c
	}
	// Unreachable: the bounds add up to at least the key count, so some
	// member always has room before a key has tried them all.
	panic(fmt.Sprintf("shardring: key %#x tried all %d members", c.key, len(r.members)))
}

// selectBest reorders s so that s[:k] holds its k smallest elements under
// cmp (in no particular order). Quickselect: the bounded members hold
// thousands of keys each and only their boundary matters.
func selectBest[T any](s []T, k int, cmp func(a, b T) int) {
	lo, hi := 0, len(s)-1
	for lo < hi && k > lo && k <= hi {
		// Median of three; any pivot gives the same set, only speed differs.
		mid := lo + (hi-lo)/2
		if cmp(s[mid], s[lo]) < 0 {
			s[mid], s[lo] = s[lo], s[mid]
		}
		if cmp(s[hi], s[lo]) < 0 {
			s[hi], s[lo] = s[lo], s[hi]
		}
		if cmp(s[hi], s[mid]) < 0 {
			s[hi], s[mid] = s[mid], s[hi]
		}
		pivot := s[mid]
		i, j := lo, hi
		for i <= j {
			for cmp(s[i], pivot) < 0 {
				i++
			}
			for cmp(s[j], pivot) > 0 {
				j--
			}
			if i <= j {
				s[i], s[j] = s[j], s[i]
				i++
				j--
			}
		}
		// Now s[lo..j] ≤ pivot ≤ s[i..hi], and everything between equals it.
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return
		}
	}
}

// Len returns the number of keys assigned.
func (a *Assignment) Len() int { return len(a.owner) }

// Ring returns the ring the assignment was made on.
func (a *Assignment) Ring() *Ring { return a.ring }

// Owner returns the member id that owns the i-th key given to Assign.
func (a *Assignment) Owner(i int) string { return a.ring.members[a.owner[i]].ID }

// OwnerIndex returns the owner of the i-th key given to Assign as an index
// into Ring().Members(): Owner without the string, for per-key loops that
// keep their own per-member state.
func (a *Assignment) OwnerIndex(i int) int { return int(a.owner[i]) }

// Loads returns the number of keys per member id.
func (a *Assignment) Loads() map[string]int {
	loads := make(map[string]int, len(a.loads))
	for i, l := range a.loads {
		loads[a.ring.members[i].ID] = l
	}
	return loads
}

// Capacity returns the bound on the keys member id may hold (0 if unknown).
func (a *Assignment) Capacity(id string) int {
	if i, ok := a.ring.memberIndex(id); ok {
		return a.caps[i]
	}
	return 0
}

// Imbalance returns the most-loaded member's keys over its weighted mean
// (1 is perfect balance). Assign keeps it at most c plus the rounding up of
// the bound: about c when members hold many keys each.
func (a *Assignment) Imbalance() float64 {
	if len(a.owner) == 0 {
		return 1
	}
	worst := 0.0
	for i, l := range a.loads {
		worst = max(worst, float64(l)/a.meanLoad(i))
	}
	return worst
}

// meanLoad is member i's share of the keys by weight.
func (a *Assignment) meanLoad(i int) float64 {
	return float64(len(a.owner)) * a.ring.members[i].weight() / a.ring.weight
}

// Move is a key whose owner differs between two assignments.
type Move struct {
	Key      int // index into the keys given to Assign
	From, To string
}

// Diff returns the keys whose owner changed from prev to next. Both must
// assign the same keys in the same order.
func Diff(prev, next *Assignment) ([]Move, error) {
	if prev.Len() != next.Len() {
		return nil, fmt.Errorf("diff: assignments cover %d and %d keys", prev.Len(), next.Len())
	}
	// Translate member indexes once so the per-key loop compares integers.
	toNext := make([]int32, len(prev.ring.members))
	for i, m := range prev.ring.members {
		j, found := next.ring.memberIndex(m.ID)
		if !found {
			j = -1
		}
		toNext[i] = int32(j)
	}
	var moves []Move
	for i, o := range prev.owner {
		if toNext[o] != next.owner[i] {
			moves = append(moves, Move{Key: i, From: prev.Owner(i), To: next.Owner(i)})
		}
	}
	return moves, nil
}
