package coordinator

import (
	"maps"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// item is one target as a worker should hold it, copied out of the table
// so that the message is built without the lock.
type item struct {
	id      uint64
	job     string
	lbls    labels.Labels
	state   shardscrapev1.TargetState
	replica uint32
}

// part is one message of an update and its estimated size.
type part struct {
	msg  *shardscrapev1.WatchAssignmentsResponse
	size int
}

// buildUpdate takes what w's stream has to send: a snapshot, or a delta of
// its pending targets and changed configs. It returns no parts when there is
// nothing to send (or during the startup grace).
func (c *Coordinator) buildUpdate(w *worker, sess *session) []part {
	c.mu.Lock()
	if c.grace || w.sess != sess {
		c.mu.Unlock()
		return nil
	}
	w.wanted = false
	snapshot := w.needSnapshot
	var items []item
	var removed []uint64
	add := func(t *target, s *slot) {
		items = append(items, item{id: t.ID, job: t.Job, lbls: t.Labels, state: s.state, replica: s.replica})
	}
	var outgoing []*slot
	if snapshot {
		items = make([]item, 0, len(w.owned))
		for id := range w.owned {
			t := c.targets[id]
			i := -1
			if t != nil {
				i = t.slotOf(w)
			}
			if i < 0 {
				// Not reachable: owned and slots change together.
				c.logger.Error("Owned target without a slot", "worker", w.id, "target", id)
				continue
			}
			s := &t.slots[i]
			add(t, s)
			if s.state == stateOutgoing {
				outgoing = append(outgoing, s)
			}
		}
	} else {
		slices.Sort(w.pending)
		w.pending = slices.Compact(w.pending)
		items = make([]item, 0, len(w.pending))
		for _, id := range w.pending {
			t := c.targets[id]
			i := -1
			if t != nil {
				i = t.slotOf(w)
			}
			if i < 0 {
				removed = append(removed, id)
				continue
			}
			s := &t.slots[i]
			add(t, s)
			if s.state == stateOutgoing {
				outgoing = append(outgoing, s)
			}
		}
	}

	var global *shardscrapev1.GlobalConfig
	var configs []*shardscrapev1.ScrapeConfig
	var removedJobs []string
	if snapshot {
		global = c.cfg.Global
		w.jobHash = make(map[string]string, len(c.jobCfgs))
	} else if h := c.cfg.Global.GetHash(); h != w.globalHash {
		global = c.cfg.Global
	}
	for _, job := range slices.Sorted(maps.Keys(c.jobCfgs)) {
		jc := c.jobCfgs[job].Config
		if w.jobHash[job] != jc.GetHash() {
			configs = append(configs, jc)
			w.jobHash[job] = jc.GetHash()
		}
	}
	for job := range w.jobHash {
		if _, ok := c.jobCfgs[job]; !ok {
			removedJobs = append(removedJobs, job)
			delete(w.jobHash, job)
		}
	}
	w.globalHash = c.cfg.Global.GetHash()
	if !snapshot && len(items) == 0 && len(removed) == 0 && global == nil && len(configs) == 0 && len(removedJobs) == 0 {
		c.mu.Unlock()
		return nil
	}
	gen := c.gen
	if gen <= w.lastSent {
		gen = c.nextGeneration()
	}
	for _, s := range outgoing {
		s.outGen = gen
	}
	base := w.lastSent
	w.lastSent = gen
	w.needSnapshot = false
	w.sentOwned = len(w.owned)
	w.pending = nil
	c.mu.Unlock()

	// Build and split outside the lock: labels are immutable, configs are
	// replaced, never modified.
	slices.Sort(removedJobs)
	b := splitter{limit: c.opts.MaxMessageBytes - 1024, head: func() *shardscrapev1.WatchAssignmentsResponse {
		m := &shardscrapev1.WatchAssignmentsResponse{Generation: gen, Snapshot: snapshot}
		if !snapshot {
			m.BaseGeneration = base
		}
		return m
	}}
	b.start()
	if global != nil {
		b.add(proto.Size(global) + 8)
		b.cur.Global = global
	}
	for _, cfg := range configs {
		if _, ok := sess.known[cfg.GetHash()]; ok {
			cfg = &shardscrapev1.ScrapeConfig{Hash: cfg.GetHash(), JobName: cfg.GetJobName(), ConfigDir: cfg.GetConfigDir()}
		} else {
			sess.known[cfg.GetHash()] = struct{}{}
		}
		b.add(proto.Size(cfg) + 8)
		b.cur.Configs = append(b.cur.Configs, cfg)
	}
	for _, j := range removedJobs {
		b.add(len(j) + 8)
		b.cur.RemovedJobs = append(b.cur.RemovedJobs, j)
	}
	if len(removed) > 0 {
		b.add(8)
	}
	for _, id := range removed {
		b.add(8)
		b.cur.RemovedTargetIds = append(b.cur.RemovedTargetIds, id)
	}
	for i := range items {
		t := toTarget(&items[i])
		b.add(targetSize(&items[i]))
		b.cur.Upserts = append(b.cur.Upserts, t)
	}
	return b.finish()
}

// splitter cuts an update into parts no larger than limit.
type splitter struct {
	limit int
	head  func() *shardscrapev1.WatchAssignmentsResponse
	parts []part
	cur   *shardscrapev1.WatchAssignmentsResponse
	size  int
	empty bool
}

const headSize = 40

func (s *splitter) start() {
	s.cur, s.size, s.empty = s.head(), headSize, true
}

// add makes room for n more bytes in the current part.
func (s *splitter) add(n int) {
	if !s.empty && s.size+n > s.limit {
		s.parts = append(s.parts, part{msg: s.cur, size: s.size})
		s.start()
		if len(s.parts) > 0 && s.parts[len(s.parts)-1].msg.RemovedTargetIds != nil {
			n += 8 // packed field header again
		}
	}
	s.size += n
	s.empty = false
}

func (s *splitter) finish() []part {
	s.parts = append(s.parts, part{msg: s.cur, size: s.size})
	for i := range s.parts[:len(s.parts)-1] {
		s.parts[i].msg.Partial = true
	}
	return s.parts
}

func toTarget(it *item) *shardscrapev1.Target {
	n := it.lbls.Len()
	backing := make([]shardscrapev1.Label, n)
	ls := make([]*shardscrapev1.Label, n)
	i := 0
	it.lbls.Range(func(l labels.Label) {
		backing[i].Name, backing[i].Value = l.Name, l.Value
		ls[i] = &backing[i]
		i++
	})
	return &shardscrapev1.Target{Id: it.id, Job: it.job, Labels: ls, State: it.state, Replica: it.replica}
}

// targetSize bounds the encoded size of it as an upserts element: each
// field's tag and length prefix take at most 1 + 5 bytes.
func targetSize(it *item) int {
	n := 6 + 9 + 6 + len(it.job) + 2 + 6
	it.lbls.Range(func(l labels.Label) {
		n += 6 + 6 + len(l.Name) + 6 + len(l.Value)
	})
	return n
}
