package coordinator

import (
	"iter"
	"runtime"
	"sync"
)

// idTable maps target ids to targets. It is an open-addressing hash table
// with linear probing over one array of (id, target) pairs, at most half
// full: a lookup reads one or two neighbouring entries, where a Go map of a
// million entries costs a directory, a control word and a slot, each a
// likely cache miss. A full change of a million targets does a million
// lookups, insertions and deletions.
type idTable struct {
	ents  []idEntry // a power of two long; t == nil: empty
	shift uint      // 64 - log2(len(ents))
	n     int
}

type idEntry struct {
	id uint64
	t  *target
}

const idTableMin = 8

func newIDTable() *idTable {
	m := &idTable{}
	m.resize(idTableMin)
	return m
}

// home is the entry an id probes first: Fibonacci hashing, so that
// sequential ids (tests) spread as well as hashes do.
func (m *idTable) home(id uint64) uint64 { return (id * 0x9e3779b97f4a7c15) >> m.shift }

func (m *idTable) len() int { return m.n }

// get returns the target with id, or nil.
func (m *idTable) get(id uint64) *target {
	mask := uint64(len(m.ents) - 1)
	for i := m.home(id); ; i = (i + 1) & mask {
		e := &m.ents[i]
		if e.t == nil {
			return nil
		}
		if e.id == id {
			return e.t
		}
	}
}

// put sets id's target (t must not be nil).
func (m *idTable) put(id uint64, t *target) {
	if 2*(m.n+1) > len(m.ents) {
		m.resize(2 * len(m.ents))
	}
	mask := uint64(len(m.ents) - 1)
	for i := m.home(id); ; i = (i + 1) & mask {
		e := &m.ents[i]
		if e.t == nil {
			*e = idEntry{id, t}
			m.n++
			return
		}
		if e.id == id {
			e.t = t
			return
		}
	}
}

// del removes id, shifting the entries after it back so that no probe
// sequence has a hole.
func (m *idTable) del(id uint64) {
	mask := uint64(len(m.ents) - 1)
	i := m.home(id)
	for ; ; i = (i + 1) & mask {
		e := &m.ents[i]
		if e.t == nil {
			return
		}
		if e.id == id {
			break
		}
	}
	m.n--
	for j := i; ; {
		j = (j + 1) & mask
		e := m.ents[j]
		if e.t == nil {
			break
		}
		// e may fill the hole at i unless its home lies cyclically in
		// (i, j]: then it would be reached before i.
		if h := m.home(e.id); (j-h)&mask < (j-i)&mask {
			continue
		}
		m.ents[i] = e
		i = j
	}
	m.ents[i] = idEntry{}
	if len(m.ents) > idTableMin && 8*m.n < len(m.ents) {
		m.resize(len(m.ents) / 2)
	}
}

func (m *idTable) resize(n int) {
	old := m.ents
	m.ents = make([]idEntry, n)
	m.shift = 64
	for s := n; s > 1; s >>= 1 {
		m.shift--
	}
	m.n = 0
	for _, e := range old {
		if e.t != nil {
			m.put(e.id, e.t)
		}
	}
}

// all yields every id and target, in no order. The table must not change
// meanwhile.
func (m *idTable) all() iter.Seq2[uint64, *target] {
	return func(yield func(uint64, *target) bool) {
		for _, e := range m.ents {
			if e.t != nil && !yield(e.id, e.t) {
				return
			}
		}
	}
}

// idShards is the number of idTables a targetTable splits ids over.
const idShards = 4

// targetTable maps target ids to targets in idShards idTables, by the id's
// low bits (idTable's home slot uses the high bits of a product), so that
// a full change's million lookups, insertions and deletions run on every
// core: each shard is changed by one goroutine at a time (eachShard).
type targetTable struct {
	shards [idShards]*idTable
}

func newTargetTable() *targetTable {
	m := &targetTable{}
	for i := range m.shards {
		m.shards[i] = newIDTable()
	}
	return m
}

func shardOf(id uint64) int { return int(id % idShards) }

func (m *targetTable) len() int {
	n := 0
	for _, s := range m.shards {
		n += s.len()
	}
	return n
}

// get returns the target with id, or nil.
func (m *targetTable) get(id uint64) *target { return m.shards[shardOf(id)].get(id) }

// put sets id's target (t must not be nil).
func (m *targetTable) put(id uint64, t *target) { m.shards[shardOf(id)].put(id, t) }

// del removes id.
func (m *targetTable) del(id uint64) { m.shards[shardOf(id)].del(id) }

// all yields every id and target, in no order. The table must not change
// meanwhile.
func (m *targetTable) all() iter.Seq2[uint64, *target] {
	return func(yield func(uint64, *target) bool) {
		for _, s := range m.shards {
			for id, t := range s.all() {
				if !yield(id, t) {
					return
				}
			}
		}
	}
}

// eachShard calls f for every shard at once, each on its own goroutine,
// when work (the number of ids to visit) is worth it, else in turn; it
// returns when all returned. f(i, s) may change shard s only and must
// touch only the targets whose ids are in it.
func (m *targetTable) eachShard(work int, f func(i int, s *idTable)) {
	if work < parallelMin || runtime.GOMAXPROCS(0) == 1 {
		for i, s := range m.shards {
			f(i, s)
		}
		return
	}
	var wg sync.WaitGroup
	for i, s := range m.shards {
		wg.Go(func() { f(i, s) })
	}
	wg.Wait()
}

// parallelMin is the least work eachShard spreads over goroutines.
const parallelMin = 16384
