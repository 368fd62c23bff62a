package coordinator

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/relabel"
	"github.com/shardscrape/shardscrape/shardring"
)

const (
	stateNew      = shardscrapev1.TargetState_TARGET_STATE_UNSPECIFIED
	stateActive   = shardscrapev1.TargetState_TARGET_STATE_ACTIVE
	stateIncoming = shardscrapev1.TargetState_TARGET_STATE_INCOMING
	stateOutgoing = shardscrapev1.TargetState_TARGET_STATE_OUTGOING
)

// Why a target is where it is (LocateTarget).
const (
	reasonRing uint8 = iota
	reasonPinned
	reasonPaused
	reasonExcluded
	reasonUnassigned
	reasonKept
)

// target is one kept target and its owners.
type target struct {
	relabel.Target
	slots []slot
	// deadline ends the handoff while a slot is INCOMING.
	deadline time.Time
	interval time.Duration // from __scrape_interval__, 0 if absent
	reason   uint8
	seen     uint64 // update sequence that last listed it
	// inline backs slots for one owner, saving an allocation per target.
	inline [1]slot
	// Last load reported by an owner.
	series uint64
	up     bool
}

// slot is one worker holding a target.
type slot struct {
	w       *worker
	state   shardscrapev1.TargetState
	replica uint32
	// leaving: an ACTIVE slot whose worker is no longer a desired owner; it
	// turns OUTGOING once no slot of the target is INCOMING.
	leaving bool
	// outGen is the generation that brought OUTGOING to the worker (0:
	// not sent yet).
	outGen uint64
	// pos is the target's index in w.owned.
	pos int
}

func (t *target) slotOf(w *worker) int {
	for i := range t.slots {
		if t.slots[i].w == w {
			return i
		}
	}
	return -1
}

func intervalOf(ls labels.Labels) time.Duration {
	v := ls.Get(model.ScrapeIntervalLabel)
	if v == "" {
		return 0
	}
	d, err := model.ParseDuration(v)
	if err != nil {
		return 0
	}
	return time.Duration(d)
}

func labelsEqual(t *target, rt *relabel.Target) bool {
	return labels.Equal(t.Labels, rt.Labels)
}

// touch records that what w should hold of t may have changed.
func (c *Coordinator) touch(w *worker, t *target) { c.touchRef(w, pendingRef{id: t.ID, t: t}) }

// touchRef is touch with a pending reference; one without object names a
// target gone from the table.
func (c *Coordinator) touchRef(w *worker, ref pendingRef) {
	if !w.alive() {
		return
	}
	if !w.needSnapshot {
		w.pending = append(w.pending, ref)
		// A worker far behind gets a snapshot instead: pending never grows
		// past about twice what the worker holds.
		if len(w.pending) > 2*max(w.ownedCount(), w.sentOwned)+4096 {
			w.needSnapshot = true
			w.pending = nil
		}
	}
	c.dirty[w] = struct{}{}
}

func (c *Coordinator) markDirty(w *worker) { c.dirty[w] = struct{}{} }

// members returns the workers on the ring, sorted by id.
func (c *Coordinator) members() []*worker {
	ws := c.scratch[:0]
	for _, w := range c.workers {
		if w.onRing() {
			ws = append(ws, w)
		}
	}
	slices.SortFunc(ws, func(a, b *worker) int { return strings.Compare(a.id, b.id) })
	c.scratch = ws
	return ws
}

// updateRing rebuilds the ring when the active member set changed: With or
// Without for one join or leave (a fraction of New's cost), else New.
func (c *Coordinator) updateRing() {
	ws := c.members()
	var sb strings.Builder
	ms := make([]shardring.Member, 0, len(ws))
	for _, w := range ws {
		sb.WriteString(w.id)
		sb.WriteByte(0)
		sb.WriteString(strconv.FormatFloat(w.capacity, 'g', -1, 64))
		sb.WriteByte(0)
		sb.WriteString(w.zone)
		sb.WriteByte(0)
		ms = append(ms, shardring.Member{ID: w.id, Weight: w.capacity, Zone: w.zone})
	}
	sig := sb.String()
	if sig == c.ringSig && (c.ring != nil) == (len(ms) > 0) {
		return
	}
	c.ringSig = sig
	if len(ms) == 0 {
		c.ring = nil
		return
	}
	if c.ring != nil {
		if r := c.ringStep(ms); r != nil {
			c.ring = r
			return
		}
	}
	r, err := shardring.New(ms, c.opts.Ring)
	if err != nil {
		// Members are validated on Join; this is a bug.
		c.logger.Error("Build ring", "err", err)
		c.ring = nil
		return
	}
	c.ring = r
}

// ringStep derives the ring for ms from the current one when they differ
// by one member; nil otherwise.
func (c *Coordinator) ringStep(ms []shardring.Member) *shardring.Ring {
	old := c.ring.Members()
	same := func(a, b shardring.Member) bool {
		return a.ID == b.ID && a.Zone == b.Zone && max(a.Weight, 1) == max(b.Weight, 1)
	}
	// diff returns the only member of a not in b, if exactly one.
	diff := func(a, b []shardring.Member) (shardring.Member, bool) {
		if len(a) != len(b)+1 {
			return shardring.Member{}, false
		}
		i := 0
		for i < len(b) && same(a[i], b[i]) {
			i++
		}
		for j := i; j < len(b); j++ {
			if !same(a[j+1], b[j]) {
				return shardring.Member{}, false
			}
		}
		return a[i], true
	}
	if m, ok := diff(ms, old); ok {
		if r, err := c.ring.With(m); err == nil {
			return r
		}
	}
	if m, ok := diff(old, ms); ok {
		if r, err := c.ring.Without(m.ID); err == nil {
			return r
		}
	}
	return nil
}

// reconcile recomputes every target's desired owners and moves the owner
// slots towards them: ring assignment, then pins, excludes and pause.
func (c *Coordinator) reconcile() {
	if c.grace || !c.needReconcile {
		return
	}
	c.needReconcile = false
	c.updateRing()
	c.lastAsgn = nil
	order := make([]*target, 0, c.targets.len())
	keys := make([]uint64, 0, c.targets.len())
	var one [1]*worker
	// Visit targets by job, in the order given: they were allocated in
	// that order, so memory is read mostly sequentially, not a cache miss
	// per target as ranging over the id map does.
	for _, job := range slices.Sorted(maps.Keys(c.jobTargets)) {
		for _, t := range c.jobTargets[job] {
			if _, ok := c.admin.excluded(t.Job, t.Address); ok {
				c.applyDesired(t, nil, reasonExcluded)
				continue
			}
			if id, ok := c.admin.pinned(t.Job, t.Address); ok {
				if w := c.workers[id]; w != nil && w.onRing() {
					one[0] = w
					c.applyDesired(t, one[:], reasonPinned)
					continue
				}
			}
			order = append(order, t)
			keys = append(keys, t.Key)
		}
	}
	if c.ring == nil {
		for _, t := range order {
			c.applyDesired(t, nil, reasonUnassigned)
		}
		return
	}
	rf := c.opts.ReplicationFactor
	var asg *shardring.Assignment
	if rf == 1 {
		asg = c.ring.Assign(keys)
		c.lastAsgn = asg
	}
	var owners, placed []*worker
	if asg != nil {
		owners, placed = c.stickyOwners(order, keys, asg)
	}
	desired := make([]*worker, 0, rf)
	for i, t := range order {
		desired = desired[:0]
		reason := reasonRing
		// ringPlaced: where the ring's assignment alone puts it.
		ringPlaced := desired
		if asg != nil {
			ringPlaced = placed[i : i+1]
			desired = append(desired, owners[i])
			if owners[i] != placed[i] {
				reason = reasonKept
			}
		} else {
			for _, id := range c.ring.Owners(t.Key, rf) {
				desired = append(desired, c.workers[id])
			}
			ringPlaced = desired
		}
		if c.admin.Paused {
			if kept := c.keptOwners(t, nil); len(kept) > 0 {
				if !sameWorkers(kept, ringPlaced) {
					reason = reasonPaused
				}
				desired = kept
			}
		}
		c.applyDesired(t, desired, reason)
	}
}

// stickyOwners places each target of order (rf = 1; keys are their keys,
// as given to asg) under the ring's bounds with placeSticky, and returns
// the owners and the ring's own placement, both by target.
func (c *Coordinator) stickyOwners(order []*target, keys []uint64, asg *shardring.Assignment) (owners, placed []*worker) {
	members := asg.Ring().Members()
	byIndex := make([]*worker, len(members))
	for i, m := range members {
		byIndex[i] = c.workers[m.ID]
	}
	for _, w := range c.workers {
		w.ringIndex = -1
	}
	for i, w := range byIndex {
		w.ringIndex = int32(i)
	}
	current := make([]int32, len(order))
	for i, t := range order {
		current[i] = -1
		if w := currentOwner(t); w != nil {
			current[i] = w.ringIndex
		}
	}
	owners = make([]*worker, len(order))
	placed = make([]*worker, len(order))
	for i, m := range placeSticky(asg, keys, current) {
		owners[i] = byIndex[m]
		placed[i] = byIndex[asg.OwnerIndex(i)]
	}
	return owners, placed
}

// currentOwner is the worker a target is with or moving to (rf = 1): its
// incoming owner during a handoff, else its active owner, if on the ring.
func currentOwner(t *target) *worker {
	var active *worker
	for _, s := range t.slots {
		if !s.w.onRing() {
			continue
		}
		switch {
		case s.state == stateIncoming || s.state == stateNew:
			return s.w
		case s.state == stateActive && active == nil:
			active = s.w
		}
	}
	return active
}

// keptOwners appends the target's current owners that stay (not leaving,
// not outgoing, on the ring), in replica order: while paused they keep it.
func (c *Coordinator) keptOwners(t *target, dst []*worker) []*worker {
	for _, s := range t.slots {
		if s.state != stateOutgoing && !s.leaving && s.w.onRing() && len(dst) < c.opts.ReplicationFactor {
			dst = append(dst, s.w)
		}
	}
	return dst
}

func sameWorkers(a, b []*worker) bool {
	return slices.Equal(a, b)
}

// applyDesired moves t's slots towards the desired owners (replica i is
// desired[i]). desired nil with reasonExcluded drops every slot (the
// workers stop the target with staleness markers); with reasonUnassigned
// (no worker can take it) the current owners keep it.
func (c *Coordinator) applyDesired(t *target, desired []*worker, reason uint8) {
	t.reason = reason
	if reason == reasonExcluded {
		c.dropAll(t)
		return
	}
	if len(desired) == 0 {
		for i := range t.slots {
			if t.slots[i].state == stateActive {
				t.slots[i].leaving = true
			}
		}
		c.settle(t)
		return
	}
	// Fast path: already exactly where it should be.
	if len(desired) == 1 && len(t.slots) == 1 {
		s := &t.slots[0]
		if s.w == desired[0] && s.state == stateActive && !s.leaving && s.replica == 0 {
			return
		}
	}
	added, had := false, len(t.slots) > 0
	for r, d := range desired {
		i := t.slotOf(d)
		if i < 0 {
			t.slots = append(t.slots, slot{w: d, state: stateNew, replica: uint32(r)})
			d.addOwned(t, &t.slots[len(t.slots)-1])
			c.touch(d, t)
			added = true
			continue
		}
		s := &t.slots[i]
		if s.state == stateOutgoing {
			// Moving back before the worker stopped it: hand it over anew.
			s.state, s.outGen = stateNew, 0
			delete(d.outgoing, t.ID)
			c.touch(d, t)
			added = true
		}
		s.leaving = false
		if s.replica != uint32(r) {
			s.replica = uint32(r)
			c.touch(d, t)
		}
	}
	leaving := false
	for i := range t.slots {
		s := &t.slots[i]
		if slices.Contains(desired, s.w) {
			continue
		}
		switch s.state {
		case stateIncoming:
			// Moving on before the handoff completed: stop it without
			// staleness markers, the old owner still scrapes it.
			c.makeOutgoing(t, s)
		case stateActive:
			s.leaving = true
			leaving = true
		}
	}
	if added && had {
		c.moves++
	}
	if added {
		for i := range t.slots {
			s := &t.slots[i]
			if s.state != stateNew {
				continue
			}
			if leaving {
				s.state = stateIncoming
				if _, ok := c.handoffs[t.ID]; !ok {
					t.deadline = c.opts.Now().Add(c.handoffTimeout(t))
					c.handoffs[t.ID] = t
					c.metrics.handoffsStarted.Inc()
				}
			} else {
				s.state = stateActive
			}
		}
	}
	c.settle(t)
}

func (c *Coordinator) makeOutgoing(t *target, s *slot) {
	s.state, s.leaving, s.outGen = stateOutgoing, false, 0
	s.w.outgoing[t.ID] = struct{}{}
	c.touch(s.w, t)
}

// settle completes what t's slots allow: incoming owners without an owner
// to take over from become active; leaving owners turn outgoing once no
// owner is incoming and another owner holds the target.
func (c *Coordinator) settle(t *target) {
	var incoming, leaving, staying bool
	for _, s := range t.slots {
		switch {
		case s.state == stateIncoming:
			incoming = true
		case s.state == stateActive && s.leaving:
			leaving = true
		case s.state == stateActive:
			staying = true
		}
	}
	if incoming && !leaving {
		for i := range t.slots {
			if s := &t.slots[i]; s.state == stateIncoming {
				s.state = stateActive
				c.touch(s.w, t)
			}
		}
		incoming, staying = false, true
	}
	if !incoming {
		delete(c.handoffs, t.ID)
		if leaving && staying {
			for i := range t.slots {
				if s := &t.slots[i]; s.state == stateActive && s.leaving {
					c.makeOutgoing(t, s)
				}
			}
		}
	}
}

// dropSlot removes slot i of t; the worker gets removed_target_ids.
func (c *Coordinator) dropSlot(t *target, i int) {
	w := t.slots[i].w
	w.removeOwned(&t.slots[i])
	delete(w.outgoing, t.ID)
	c.touch(w, t)
	t.slots = slices.Delete(t.slots, i, i+1)
}

// forget drops every slot of t, gone from discovery: its owners get
// removed_target_ids. Their pending lists name it by id only, so that a
// full change's old targets can be collected before the streams run.
func (c *Coordinator) forget(t *target) {
	for len(t.slots) > 0 {
		i := len(t.slots) - 1
		w := t.slots[i].w
		w.removeOwned(&t.slots[i])
		delete(w.outgoing, t.ID)
		c.touchRef(w, pendingRef{id: t.ID})
		t.slots[i] = slot{}
		t.slots = t.slots[:i]
	}
	delete(c.handoffs, t.ID)
}

// dropAll removes every slot of t: gone from discovery or excluded.
func (c *Coordinator) dropAll(t *target) {
	for len(t.slots) > 0 {
		c.dropSlot(t, len(t.slots)-1)
	}
	delete(c.handoffs, t.ID)
}

// expire ends w's lease: it leaves the ring and its targets go to their
// new owners at once.
func (c *Coordinator) expire(w *worker) {
	c.release(w, shardscrapev1.WorkerState_WORKER_STATE_EXPIRED)
}

// release takes w off the ring and drops its slots without messages; state
// is EXPIRED, or UNSPECIFIED to forget the worker (after Leave).
func (c *Coordinator) release(w *worker, state shardscrapev1.WorkerState) {
	for _, t := range w.owned {
		if t == nil {
			continue
		}
		if i := t.slotOf(w); i >= 0 {
			t.slots = slices.Delete(t.slots, i, i+1)
		}
		c.settle(t)
	}
	w.owned, w.ownedFree = nil, 0
	w.outgoing = map[uint64]struct{}{}
	w.pending = nil
	w.needSnapshot = true
	w.state = state
	w.endSession(errLeaseGone)
	delete(c.dirty, w)
	delete(c.updWaiting, w)
	if state == shardscrapev1.WorkerState_WORKER_STATE_UNSPECIFIED {
		delete(c.workers, w.id)
	}
	c.needReconcile = true
	// Wake Leave waiters even when no stream changed.
	close(c.changed)
	c.changed = make(chan struct{})
}

// settleDrains marks drained workers that hold nothing any more.
func (c *Coordinator) settleDrains() {
	for _, w := range c.workers {
		if w.state == shardscrapev1.WorkerState_WORKER_STATE_DRAINING && !w.leaving && w.holders() == 0 {
			w.state = shardscrapev1.WorkerState_WORKER_STATE_DRAINED
		}
	}
}

// endGrace ends the startup grace: the previous owners that joined again
// hold their targets as before, then the ring takes over. Targets that
// discovery has not found again yet get their previous owners when they
// appear, for a while (prevUntil).
func (c *Coordinator) endGrace() {
	c.grace = false
	for id := range c.prevOwners {
		if t := c.targets.get(id); t != nil {
			c.seedPrevious(t)
		}
	}
	c.prevIDs = nil
	c.prevUntil = c.opts.Now().Add(10 * c.opts.LeaseTTL)
	c.needReconcile = true
	for _, w := range c.workers {
		if w.alive() {
			c.markDirty(w)
		}
	}
	c.logger.Info("Startup grace over", "workers", len(c.workers), "targets", c.targets.len())
}

// seedPrevious gives t, when it has no owner yet, the owners it had before
// the restart that are on the ring.
func (c *Coordinator) seedPrevious(t *target) {
	owners, ok := c.prevOwners[t.ID]
	if !ok {
		return
	}
	delete(c.prevOwners, t.ID)
	if len(t.slots) > 0 {
		return
	}
	for r, o := range owners {
		w := c.workers[o]
		if w == nil || !w.onRing() || t.slotOf(w) >= 0 {
			continue
		}
		t.slots = append(t.slots, slot{w: w, state: stateActive, replica: uint32(r)})
		w.addOwned(t, &t.slots[len(t.slots)-1])
		c.touch(w, t)
	}
}
