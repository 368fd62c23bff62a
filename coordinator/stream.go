package coordinator

import (
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

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
		items = make([]item, 0, w.ownedCount())
		for _, t := range w.owned {
			if t == nil {
				continue
			}
			i := t.slotOf(w)
			if i < 0 {
				// Not reachable: owned and slots change together.
				c.logger.Error("Owned target without a slot", "worker", w.id, "target", t.ID)
				continue
			}
			s := &t.slots[i]
			add(t, s)
			if s.state == stateOutgoing {
				outgoing = append(outgoing, s)
			}
		}
	} else {
		// Repeats of an object are skipped by marking it (target.seen
		// means nothing outside setJobTargets). A target id may be listed
		// by more than one object: removed, then discovered again. Only
		// the live one can have w's slot (a removed target has none), so
		// the id is an upsert if one of its objects has w's slot, else
		// removed: removed ids are deduplicated against the upserts below,
		// outside the lock.
		c.seq++
		mark := c.seq
		// Upserts are targets w holds: at most ownedCount of them.
		items = make([]item, 0, min(len(w.pending), w.ownedCount()))
		for _, p := range w.pending {
			t := p.t
			if t == nil { // gone from the table
				removed = append(removed, p.id)
				continue
			}
			if t.seen == mark {
				continue
			}
			t.seen = mark
			i := t.slotOf(w)
			if i < 0 {
				removed = append(removed, p.id)
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
	w.sentOwned = w.ownedCount()
	// Keep pending's array for the next delta unless it is larger than a
	// delta may grow (touch): a full change refills it at once.
	clear(w.pending)
	w.pending = w.pending[:0]
	if cap(w.pending) > 2*max(w.ownedCount(), w.sentOwned)+4096 {
		w.pending = nil
	}
	c.mu.Unlock()

	removed = dedupRemoved(removed, items)

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
	if len(items) > 0 {
		// Upserts are encoded here, straight into the message's bytes
		// (see appendTarget), not built as a million small messages.
		b.raw = make([]byte, 0, min(b.limit, len(items)*upsertSizeHint(&items[0])))
	}
	lenHint := 0
	for i := range items {
		// Encoded in place behind its tag and length (appendUpsert); an
		// upsert that does not fit the part opens the next.
		start := len(b.raw)
		b.raw, lenHint = appendUpsert(b.raw, &items[i], lenHint)
		n := len(b.raw) - start
		if !b.empty && b.size+n > b.limit {
			elem := b.raw[start:]
			b.raw = b.raw[:start:start]
			b.flush(true)
			b.start()
			b.raw = append(b.raw, elem...)
		}
		b.size += n
		b.empty = false
	}
	return b.finish()
}

// dedupRemoved sorts and deduplicates removed ids and drops those that are
// upserts too (removed and discovered again since the last update).
func dedupRemoved(removed []uint64, items []item) []uint64 {
	if len(removed) == 0 {
		return removed
	}
	slices.Sort(removed)
	removed = slices.Compact(removed)
	if len(items) == 0 {
		return removed
	}
	ups := make([]uint64, len(items))
	for i := range items {
		ups[i] = items[i].id
	}
	slices.Sort(ups)
	out, j := removed[:0], 0
	for _, id := range removed {
		for j < len(ups) && ups[j] < id {
			j++
		}
		if j < len(ups) && ups[j] == id {
			continue
		}
		out = append(out, id)
	}
	return out
}

// splitter cuts an update into parts no larger than limit.
type splitter struct {
	limit int
	head  func() *shardscrapev1.WatchAssignmentsResponse
	parts []part
	cur   *shardscrapev1.WatchAssignmentsResponse
	// raw holds the current part's encoded upserts.
	raw   []byte
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
		s.flush(true)
		s.start()
		if len(s.parts) > 0 && s.parts[len(s.parts)-1].msg.RemovedTargetIds != nil {
			n += 8 // packed field header again
		}
	}
	s.size += n
	s.empty = false
}

// flush closes the current part; more: another part follows.
func (s *splitter) flush(more bool) {
	if len(s.raw) > 0 {
		s.cur.ProtoReflect().SetUnknown(protoreflect.RawFields(s.raw))
		s.raw = nil
		if more {
			s.raw = make([]byte, 0, s.limit)
		}
	}
	s.parts = append(s.parts, part{msg: s.cur, size: s.size})
}

func (s *splitter) finish() []part {
	s.flush(false)
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

// Field numbers of WatchAssignmentsResponse.upserts, Target and Label.
const (
	fieldUpserts       protowire.Number = 8
	fieldTargetID      protowire.Number = 1
	fieldTargetJob     protowire.Number = 2
	fieldTargetLabels  protowire.Number = 3
	fieldTargetState   protowire.Number = 4
	fieldTargetReplica protowire.Number = 5
	fieldLabelName     protowire.Number = 1
	fieldLabelValue    protowire.Number = 2
)

// The upserts of an update are encoded with protowire into the message's
// unknown fields: WatchAssignmentsResponse.upserts (field 8) is a known
// field to every receiver, which parses those bytes as it would the
// marshaled Targets (repeated fields accumulate in any order on the wire).
// A Target is encoded as proto.Marshal does: fields in number order, zero
// values left out; strings that are not valid UTF-8 (which Marshal would
// refuse, failing the stream) have the invalid bytes replaced by U+FFFD.

// stringSize is the encoded size of a string field (0 when empty).
func stringSize(v string) int {
	if v == "" {
		return 0
	}
	return 1 + protowire.SizeBytes(len(v))
}

func labelSize(l labels.Label) int {
	return stringSize(validUTF8(l.Name)) + stringSize(validUTF8(l.Value))
}

// targetSize is the encoded size of it as a Target message.
func targetSize(it *item) int {
	n := 1 + 8 + stringSize(validUTF8(it.job))
	it.lbls.Range(func(l labels.Label) {
		n += 1 + protowire.SizeBytes(labelSize(l))
	})
	if it.state != 0 {
		n += 1 + protowire.SizeVarint(uint64(it.state))
	}
	if it.replica != 0 {
		n += 1 + protowire.SizeVarint(uint64(it.replica))
	}
	return n
}

// upsertSizeHint guesses an upserts element's size from a sample, for a
// buffer's first capacity.
func upsertSizeHint(it *item) int { return 1 + protowire.SizeBytes(targetSize(it)) + 8 }

func appendString(b []byte, num protowire.Number, v string) []byte {
	if v == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

// appendTarget appends it encoded as a Target message.
func appendTarget(b []byte, it *item) []byte {
	b = protowire.AppendTag(b, fieldTargetID, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, it.id)
	b = appendString(b, fieldTargetJob, validUTF8(it.job))
	it.lbls.Range(func(l labels.Label) {
		name, value := validUTF8(l.Name), validUTF8(l.Value)
		b = protowire.AppendTag(b, fieldTargetLabels, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(stringSize(name)+stringSize(value)))
		b = appendString(b, fieldLabelName, name)
		b = appendString(b, fieldLabelValue, value)
	})
	if it.state != 0 {
		b = protowire.AppendTag(b, fieldTargetState, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(it.state))
	}
	if it.replica != 0 {
		b = protowire.AppendTag(b, fieldTargetReplica, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(it.replica))
	}
	return b
}

// appendUpsert appends it as a WatchAssignmentsResponse.upserts element:
// tag, length, Target, as proto.Marshal does. The Target is encoded in
// place behind room for its length, guessed from lenHint (the previous
// element's length), and moved when the guess was wrong. It returns the
// Target's length, the next hint.
func appendUpsert(b []byte, it *item, lenHint int) ([]byte, int) {
	b = protowire.AppendTag(b, fieldUpserts, protowire.BytesType)
	room := protowire.SizeVarint(uint64(lenHint))
	at := len(b)
	for range room {
		b = append(b, 0)
	}
	b = appendTarget(b, it)
	n := len(b) - at - room
	if need := protowire.SizeVarint(uint64(n)); need != room {
		if need > room {
			b = append(b, make([]byte, need-room)...)
		}
		copy(b[at+need:], b[at+room:at+room+n])
		b = b[:at+need+n]
	}
	protowire.AppendVarint(b[at:at], uint64(n))
	return b, n
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
