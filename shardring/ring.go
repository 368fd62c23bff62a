// Package shardring is the consistent-hash ring that splits scrape targets
// across scraper workers.
//
// Members (workers) own virtual nodes on a 64-bit hash ring; a key (the xxhash
// of a target's ownership key, computed by the coordinator) belongs to the
// member of the first virtual node at or after it. Assign adds bounded loads
// (Mirrokni et al.): no member holds more than ceil(c · mean · weight) keys.
//
// The ring is pure and deterministic: the same members and keys give the same
// result whatever order they were given in, and nothing here does I/O or keeps
// mutable state, so a Ring is safe for concurrent use.
package shardring

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

const (
	// DefaultVirtualNodes is the number of virtual nodes per unit of weight.
	// See the README in this folder for the measured trade-off.
	DefaultVirtualNodes = 8192
	// DefaultLoadFactor is c in ceil(c · mean · weight).
	DefaultLoadFactor = 1.02

	// maxMembers, maxWeight and maxPoints keep a bad membership request (a
	// worker claiming an absurd capacity) from making the ring allocate
	// without bound: 2^25 points are about 400 MiB.
	maxMembers = 1 << 16
	maxWeight  = 1000
	maxPoints  = 1 << 25
)

// Errors returned by New, With and Without.
var (
	ErrNoMembers      = errors.New("ring has no members")
	ErrDuplicateID    = errors.New("duplicate member id")
	ErrUnknownMember  = errors.New("unknown member")
	ErrInvalidMember  = errors.New("invalid member")
	ErrInvalidOptions = errors.New("invalid ring options")
)

// Member is one scraper worker on the ring.
type Member struct {
	// ID is stable across restarts (the StatefulSet pod name).
	ID string
	// Weight scales both the member's virtual nodes and its load bound.
	// Zero means 1.
	Weight float64
	// Zone is optional; Owners spreads replicas over zones when set.
	Zone string
}

func (m Member) weight() float64 {
	if m.Weight == 0 {
		return 1
	}
	return m.Weight
}

// Options tune the ring. The zero value means the defaults.
type Options struct {
	// VirtualNodes per unit of weight; more points even out the base
	// distribution and so cut the movement that bounded loads add.
	VirtualNodes int
	// LoadFactor is c: Assign gives no member more than
	// ceil(c · keys · weight / total weight) keys. Must be ≥ 1.
	LoadFactor float64
}

func (o Options) withDefaults() (Options, error) {
	if o.VirtualNodes == 0 {
		o.VirtualNodes = DefaultVirtualNodes
	}
	if o.LoadFactor == 0 {
		o.LoadFactor = DefaultLoadFactor
	}
	if o.VirtualNodes < 1 || o.VirtualNodes > 1<<20 {
		return o, fmt.Errorf("%w: virtual nodes %d not in [1, %d]", ErrInvalidOptions, o.VirtualNodes, 1<<20)
	}
	if !(o.LoadFactor >= 1) || math.IsInf(o.LoadFactor, 0) {
		return o, fmt.Errorf("%w: load factor %v must be a finite number ≥ 1", ErrInvalidOptions, o.LoadFactor)
	}
	return o, nil
}

// Ring is an immutable consistent-hash ring. Build one with New; derive the
// next one with With or Without, which give the same ring as New on the new
// member set, only faster.
type Ring struct {
	opts    Options
	members []Member // sorted by ID; a member's index is its position here
	seeds   []uint64 // per member: xxhash of the ID
	zones   []int32  // per member: its zone, numbered in member order
	nZones  int
	weight  float64 // sum of member weights

	// points are the virtual nodes, sorted by (hash, member index); owners[i]
	// is the member of points[i].
	points []uint64
	owners []int32

	// index[p] is the first point whose top indexBits bits are ≥ p, for
	// p in [0, 2^indexBits]; it replaces a binary search with a short scan.
	index     []int32
	indexBits uint
}

// New builds a ring of members.
func New(members []Member, opts Options) (*Ring, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	sorted, err := sortMembers(members)
	if err != nil {
		return nil, err
	}
	r := &Ring{opts: opts}
	r.setMembers(sorted)

	n := 0
	for _, m := range r.members {
		n += r.vnodes(m)
	}
	if err := checkPoints(n, opts); err != nil {
		return nil, err
	}
	pts := make([]uint64, 0, n)
	own := make([]int32, 0, n)
	for i, m := range r.members {
		pts = appendPoints(pts, r.seeds[i], r.vnodes(m))
		for range r.vnodes(m) {
			own = append(own, int32(i))
		}
	}
	r.points, r.owners = sortPoints(pts, own)
	r.buildIndex()
	return r, nil
}

func sortMembers(members []Member) ([]Member, error) {
	if len(members) == 0 {
		return nil, ErrNoMembers
	}
	if len(members) > maxMembers {
		return nil, fmt.Errorf("%w: %d members, at most %d", ErrInvalidMember, len(members), maxMembers)
	}
	sorted := slices.Clone(members)
	for _, m := range sorted {
		if err := validMember(m); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(sorted, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].ID == sorted[i-1].ID {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateID, sorted[i].ID)
		}
	}
	return sorted, nil
}

func validMember(m Member) error {
	if m.ID == "" {
		return fmt.Errorf("%w: empty id", ErrInvalidMember)
	}
	if w := m.Weight; !(w >= 0 && w <= maxWeight) {
		return fmt.Errorf("%w: member %q: weight %v not in [0, %d] (0 means 1)", ErrInvalidMember, m.ID, w, maxWeight)
	}
	return nil
}

func checkPoints(n int, opts Options) error {
	if n > maxPoints {
		return fmt.Errorf("%w: %d virtual nodes in all, at most %d: lower VirtualNodes (now %d per unit of weight) or the weights",
			ErrInvalidOptions, n, maxPoints, opts.VirtualNodes)
	}
	return nil
}

// setMembers fills everything derived from the sorted member list alone.
func (r *Ring) setMembers(sorted []Member) {
	r.members = sorted
	r.seeds = make([]uint64, len(sorted))
	r.zones = make([]int32, len(sorted))
	r.weight = 0
	// A member without a zone shares a failure domain with nobody: it gets a
	// zone of its own, so it neither constrains nor attracts replicas.
	zoneIdx := map[string]int32{}
	var nZones int32
	for i, m := range sorted {
		r.seeds[i] = xxhash.Sum64String(m.ID)
		r.weight += m.weight()
		z, ok := zoneIdx[m.Zone]
		if !ok {
			z = nZones
			nZones++
			if m.Zone != "" {
				zoneIdx[m.Zone] = z
			}
		}
		r.zones[i] = z
	}
	r.nZones = int(nZones)
}

func (r *Ring) vnodes(m Member) int {
	return max(1, int(math.Round(float64(r.opts.VirtualNodes)*m.weight())))
}

// appendPoints appends a member's virtual nodes: a counter-mode splitmix64
// stream seeded by the member id, so that adding or removing one member never
// moves another member's points.
func appendPoints(dst []uint64, seed uint64, n int) []uint64 {
	for j := range n {
		dst = append(dst, mix64(seed+uint64(j+1)*0x9e3779b97f4a7c15))
	}
	return dst
}

// mix64 is the splitmix64 finalizer: a bijection with full avalanche.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (r *Ring) buildIndex() {
	r.indexBits = prefixBits(len(r.points))
	r.index = prefixStarts(r.points, r.indexBits) // points are sorted
}

// successor returns the index of the first point at or after key, wrapping.
func (r *Ring) successor(key uint64) int {
	var p uint64
	if r.indexBits > 0 {
		p = key >> (64 - r.indexBits)
	}
	i, end := int(r.index[p]), int(r.index[p+1])
	for i < end && r.points[i] < key {
		i++
	}
	if i == len(r.points) {
		return 0
	}
	return i
}

// memberIndex returns the index of member id, or where it would go.
func (r *Ring) memberIndex(id string) (int, bool) {
	return slices.BinarySearchFunc(r.members, id, func(a Member, id string) int { return strings.Compare(a.ID, id) })
}

// With returns the ring with m added.
func (r *Ring) With(m Member) (*Ring, error) {
	if err := validMember(m); err != nil {
		return nil, err
	}
	pos, found := r.memberIndex(m.ID)
	if found {
		return nil, fmt.Errorf("%w: %q", ErrDuplicateID, m.ID)
	}
	if len(r.members)+1 > maxMembers {
		return nil, fmt.Errorf("%w: at most %d members", ErrInvalidMember, maxMembers)
	}
	nr := &Ring{opts: r.opts}
	nr.setMembers(slices.Insert(slices.Clone(r.members), pos, m))

	n := nr.vnodes(m)
	if err := checkPoints(len(r.points)+n, r.opts); err != nil {
		return nil, err
	}
	newPts, newOwn := sortPoints(appendPoints(make([]uint64, 0, n), nr.seeds[pos], n), slices.Repeat([]int32{int32(pos)}, n))
	// Merge the sorted new points into the old ones; indexes at or past pos
	// shift by one, which keeps ties ordered by member id as New does.
	total := len(r.points) + n
	nr.points = make([]uint64, 0, total)
	nr.owners = make([]int32, 0, total)
	i, j := 0, 0
	for i < len(r.points) || j < n {
		if j == n || (i < len(r.points) && (r.points[i] < newPts[j] || (r.points[i] == newPts[j] && r.owners[i] < int32(pos)))) {
			o := r.owners[i]
			if o >= int32(pos) {
				o++
			}
			nr.points = append(nr.points, r.points[i])
			nr.owners = append(nr.owners, o)
			i++
			continue
		}
		nr.points = append(nr.points, newPts[j])
		nr.owners = append(nr.owners, newOwn[j])
		j++
	}
	nr.buildIndex()
	return nr, nil
}

// Without returns the ring with the member id removed.
func (r *Ring) Without(id string) (*Ring, error) {
	pos, found := r.memberIndex(id)
	if !found {
		return nil, fmt.Errorf("%w: %q", ErrUnknownMember, id)
	}
	if len(r.members) == 1 {
		return nil, ErrNoMembers
	}
	nr := &Ring{opts: r.opts}
	nr.setMembers(slices.Delete(slices.Clone(r.members), pos, pos+1))
	keep := len(r.points) - r.vnodes(r.members[pos])
	nr.points = make([]uint64, 0, keep)
	nr.owners = make([]int32, 0, keep)
	for i, o := range r.owners {
		switch {
		case o == int32(pos):
			continue
		case o > int32(pos):
			o--
		}
		nr.points = append(nr.points, r.points[i])
		nr.owners = append(nr.owners, o)
	}
	nr.buildIndex()
	return nr, nil
}

// Members returns the members sorted by id.
func (r *Ring) Members() []Member { return slices.Clone(r.members) }

// Options returns the options in force, defaults applied.
func (r *Ring) Options() Options { return r.opts }

// Owner returns the id of the member that owns key on the ring. It knows of
// no other keys and so applies no load bound; Assign does.
func (r *Ring) Owner(key uint64) string {
	return r.members[r.owners[r.successor(key)]].ID
}

// Owners returns min(n, members) distinct member ids for key, walking the
// ring clockwise. When members have zones, the first min(n, zones) owners are
// in distinct zones (a member without a zone counts as a zone of its own);
// the rest follow in ring order. Owners(key, 1)[0] equals Owner(key).
func (r *Ring) Owners(key uint64, n int) []string {
	n = min(n, len(r.members))
	if n <= 0 {
		return nil
	}
	spread := min(n, r.nZones) // leading owners that must be in distinct zones
	picked := make([]int32, 0, n)
	var deferred []int32 // seen while zones were still to cover, in ring order
	seen := make([]bool, len(r.members))
	zoneUsed := make([]bool, r.nZones)
	nSeen := 0
	start := r.successor(key)
	for step := 0; step < len(r.points) && len(picked) < n && nSeen < len(r.members); step++ {
		o := r.owners[(start+step)%len(r.points)]
		if seen[o] {
			continue
		}
		seen[o] = true
		nSeen++
		if len(picked) < spread {
			if zoneUsed[r.zones[o]] {
				deferred = append(deferred, o)
				continue
			}
			zoneUsed[r.zones[o]] = true
			picked = append(picked, o)
			if len(picked) == spread {
				// Zones are covered: the deferred members come next.
				picked = appendUpTo(picked, deferred, n)
				deferred = nil
			}
			continue
		}
		picked = append(picked, o)
	}
	picked = appendUpTo(picked, deferred, n)
	ids := make([]string, len(picked))
	for i, o := range picked {
		ids[i] = r.members[o].ID
	}
	return ids
}

// OwnedFraction returns, per member id, the fraction of the hash space its
// virtual nodes cover: the share of keys it gets before load bounds apply.
func (r *Ring) OwnedFraction() map[string]float64 {
	frac := make(map[string]float64, len(r.members))
	last := r.points[len(r.points)-1]
	for i, p := range r.points {
		// The arc (previous point, p] belongs to owners[i]; unsigned
		// subtraction wraps for the first point.
		frac[r.members[r.owners[i]].ID] += float64(p-last) / math.MaxUint64
		last = p
	}
	if len(r.points) == 1 {
		frac[r.members[r.owners[0]].ID] = 1
	}
	return frac
}

func appendUpTo(dst, src []int32, n int) []int32 {
	return append(dst, src[:min(len(src), max(0, n-len(dst)))]...)
}
