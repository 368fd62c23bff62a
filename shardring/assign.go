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
// which propose to their next member. A member ranks keys by how many members
// they tried before (its own ring keys first), then by a hash of key and
// member. The key-optimal stable matching is unique, so the result depends
// only on the member set and the set of keys, not on their order; and since a
// member's ranking ignores every other member, a membership change spills
// only the keys near each member's bound.
//
// Keys are xxhash values of ownership keys. Equal keys are interchangeable:
// which of two equal keys spills follows their order.
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
		// rounding up to one more key than c allows.
		caps[i] = int(math.Ceil(r.opts.LoadFactor * float64(n) * m.weight() / r.weight * (1 - 1e-12)))
	}
	return caps
}

// candidate is a key proposing to a member.
type candidate struct {
	rank  int32 // members this key tried before this one
	pos   int32 // index into the keys given to Assign
	key   uint64
	point int32  // ring point of the member proposed to
	prio  uint64 // the member's preference: lower is better
	tried []int32
}

// compareCandidates orders candidates best first for the member they
// propose to. Ties on key (equal keys) fall back to their position.
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
	return cmp.Compare(a.pos, b.pos)
}

// trimOverloaded is the first round of deferred acceptance: every member
// above its bound keeps its best ring keys and rejects the rest.
func (a *Assignment) trimOverloaded(keys []uint64) []candidate {
	r := a.ring
	// ringKey is a compact candidate of rank 0: the over-bound members hold
	// some hundred thousand of them, of which only a few hundred spill.
	type ringKey struct {
		prio, key uint64
		pos       int32
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
		selectBest(l, a.caps[m], func(a, b ringKey) int {
			return compareCandidates(candidate{prio: a.prio, key: a.key, pos: a.pos}, candidate{prio: b.prio, key: b.key, pos: b.pos})
		})
		for _, k := range l[a.caps[m]:] {
			rejected = append(rejected, candidate{
				pos: k.pos, key: k.key, prio: k.prio,
				point: int32(r.successor(k.key)),
				tried: []int32{int32(m)},
			})
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
		rejected = rejected[:0]
		// Member order only decides the order of the rejected list, which the
		// stable matching does not depend on; sort anyway for reproducibility.
		members := make([]int32, 0, len(proposals))
		for m := range proposals {
			members = append(members, m)
		}
		slices.Sort(members)
		for _, m := range members {
			ps := proposals[m]
			if free := a.caps[m] - a.loads[m]; len(ps) <= free {
				held[m] = append(held[m], ps...)
				a.loads[m] += len(ps)
				continue
			}
			all := append(held[m], ps...)
			room := len(held[m]) + a.caps[m] - a.loads[m]
			selectBest(all, room, compareCandidates)
			held[m] = all[:room:room]
			rejected = append(rejected, all[room:]...)
			a.loads[m] = a.caps[m]
		}
	}
	for m, cs := range held {
		for _, c := range cs {
			a.owner[c.pos] = m
		}
	}
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
		c.tried = append(c.tried, o)
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
	for i, m := range a.ring.members {
		if m.ID == id {
			return a.caps[i]
		}
	}
	return 0
}

// Imbalance returns the most-loaded member's keys over its weighted mean
// (1 is perfect balance; Assign keeps it at most about c).
func (a *Assignment) Imbalance() float64 {
	if len(a.owner) == 0 {
		return 1
	}
	worst := 0.0
	for i, l := range a.loads {
		mean := float64(len(a.owner)) * a.ring.members[i].weight() / a.ring.weight
		worst = max(worst, float64(l)/mean)
	}
	return worst
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
		j, found := slices.BinarySearchFunc(next.ring.members, m.ID, func(a Member, id string) int { return cmp.Compare(a.ID, id) })
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
