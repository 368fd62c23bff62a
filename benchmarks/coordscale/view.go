package main

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// Target states as the proto numbers them (pb.TargetState).
const (
	stateActive   = uint8(pb.TargetState_TARGET_STATE_ACTIVE)
	stateIncoming = uint8(pb.TargetState_TARGET_STATE_INCOMING)
	stateOutgoing = uint8(pb.TargetState_TARGET_STATE_OUTGOING)
)

// errBaseMismatch: a delta on another generation than the one held; the
// worker reconnects with resume_generation, as scraper.ErrBaseMismatch.
var errBaseMismatch = errors.New("delta does not apply to the generation held")

// upsert is what a simulated worker keeps of a Target: its id, job, state
// and discovered __address__ (for the benchmark's own checks).
type upsert struct {
	id    uint64
	job   string
	addr  string
	state uint8
}

// update is one decoded WatchAssignmentsResponse part, or several merged.
type update struct {
	gen, base         uint64
	snapshot, partial bool
	removedJobs       []string
	upserts           []upsert
	removed           []uint64
	// bytes is the size of the protobuf messages (payload, no framing).
	bytes int
}

// merge adds the fields of part to u (an update split into parts).
func (u *update) merge(part *update) {
	u.gen, u.base, u.snapshot, u.partial = part.gen, part.base, part.snapshot, part.partial
	u.removedJobs = append(u.removedJobs, part.removedJobs...)
	u.upserts = append(u.upserts, part.upserts...)
	u.removed = append(u.removed, part.removed...)
	u.bytes += part.bytes
}

// rawCodec marshals requests as protobuf and decodes a
// WatchAssignmentsResponse into an update, reading of each target only what
// the benchmark checks (a worker would proto.Unmarshal it whole; the
// simulated workers share the benchmark process's 2 cores with the fakes,
// so they do less).
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal %T: not a proto message", v)
	}
	return proto.Marshal(m)
}

func (rawCodec) Unmarshal(b []byte, v any) error {
	u, ok := v.(*update)
	if !ok {
		return fmt.Errorf("unmarshal into %T: want *update", v)
	}
	return decodeUpdate(b, u)
}

// jobNames interns job names (string → string): every target of a job
// shares one string. Streams decode concurrently.
var jobNames sync.Map

func internJob(b []byte) string {
	if s, ok := jobNames.Load(string(b)); ok {
		return s.(string)
	}
	s, _ := jobNames.LoadOrStore(string(b), string(b))
	return s.(string)
}

// decodeUpdate decodes a WatchAssignmentsResponse (field numbers of
// worker.proto) into u.
func decodeUpdate(b []byte, u *update) error {
	*u = update{bytes: len(b)}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("assignment message: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			u.gen, n = protowire.ConsumeVarint(b)
		case num == 2 && typ == protowire.VarintType:
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			u.snapshot = x != 0
		case num == 3 && typ == protowire.VarintType:
			u.base, n = protowire.ConsumeVarint(b)
		case num == 4 && typ == protowire.VarintType:
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			u.partial = x != 0
		case num == 7 && typ == protowire.BytesType:
			var p []byte
			p, n = protowire.ConsumeBytes(b)
			u.removedJobs = append(u.removedJobs, string(p))
		case num == 8 && typ == protowire.BytesType:
			var p []byte
			p, n = protowire.ConsumeBytes(b)
			if n >= 0 {
				t, err := decodeTarget(p)
				if err != nil {
					return err
				}
				u.upserts = append(u.upserts, t)
			}
		case num == 9 && typ == protowire.BytesType: // packed
			var p []byte
			p, n = protowire.ConsumeBytes(b)
			for len(p) >= 8 {
				id, m := protowire.ConsumeFixed64(p)
				if m < 0 {
					return fmt.Errorf("removed_target_ids: %w", protowire.ParseError(m))
				}
				u.removed = append(u.removed, id)
				p = p[m:]
			}
		case num == 9 && typ == protowire.Fixed64Type:
			var id uint64
			id, n = protowire.ConsumeFixed64(b)
			u.removed = append(u.removed, id)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("assignment message field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

// decodeTarget reads a Target's id, job, state and __address__ label.
func decodeTarget(b []byte) (upsert, error) {
	var t upsert
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return t, fmt.Errorf("target: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			t.id, n = protowire.ConsumeFixed64(b)
		case num == 2 && typ == protowire.BytesType:
			var p []byte
			p, n = protowire.ConsumeBytes(b)
			t.job = internJob(p)
		case num == 3 && typ == protowire.BytesType:
			var p []byte
			p, n = protowire.ConsumeBytes(b)
			if name, value := decodeLabel(p); name == "__address__" {
				t.addr = value
			}
		case num == 4 && typ == protowire.VarintType:
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			t.state = uint8(x)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return t, fmt.Errorf("target field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	if t.state == 0 {
		t.state = stateActive // unset reads as ACTIVE, as the worker treats it
	}
	return t, nil
}

func decodeLabel(b []byte) (name, value string) {
	var nb []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", ""
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
		} else {
			var p []byte
			p, n = protowire.ConsumeBytes(b)
			switch num {
			case 1:
				nb = p
			case 2:
				if string(nb) == "__address__" {
					value = string(p)
				}
			}
		}
		if n < 0 {
			return "", ""
		}
		b = b[n:]
	}
	return string(nb), value
}

// vtarget is a target in a view.
type vtarget struct {
	job, addr string
	state     uint8
}

// view is one worker's assignment, as the scraper's assignment type holds
// it: the result of a snapshot and the deltas after it.
type view struct {
	gen     uint64
	targets map[uint64]vtarget
	// counts by state
	active, incoming, outgoing int
}

func newView() *view { return &view{targets: map[uint64]vtarget{}} }

// applied is what applying an update changed for the worker.
type applied struct {
	// newIncoming: targets that became INCOMING (the worker acks their
	// first scrape).
	newIncoming []uint64
	// newScraped: targets the worker did not scrape before and does now
	// (it reports their load).
	newScraped []uint64
	// owning: the update changed which targets the worker holds ACTIVE or
	// INCOMING (a snapshot always counts); removing OUTGOING ones does not.
	owning bool
}

// apply applies u (all its parts merged) as scraper's assignment.apply
// does: a snapshot replaces everything, a delta must be on the generation
// held.
func (v *view) apply(u *update) (applied, error) {
	var res applied
	if !u.snapshot && u.base != v.gen {
		return res, fmt.Errorf("%w: delta from %d to %d, holding %d", errBaseMismatch, u.base, u.gen, v.gen)
	}
	old := v.targets
	next := old
	if u.snapshot {
		next = make(map[uint64]vtarget, len(u.upserts))
	} else {
		if len(u.removedJobs) > 0 {
			jobs := map[string]bool{}
			for _, j := range u.removedJobs {
				jobs[j] = true
			}
			for id, t := range next {
				if jobs[t.job] {
					delete(next, id)
				}
			}
		}
		for _, id := range u.removed {
			if t, ok := next[id]; ok && t.state != stateOutgoing {
				res.owning = true
			}
			delete(next, id)
		}
	}
	if u.snapshot || len(u.removedJobs) > 0 {
		res.owning = true
	}
	for _, t := range u.upserts {
		prev, had := old[t.id]
		if !had && t.state != stateOutgoing || had && prev.state != t.state {
			res.owning = true
		}
		if t.state == stateIncoming && (!had || prev.state != stateIncoming) {
			res.newIncoming = append(res.newIncoming, t.id)
		}
		if t.state != stateOutgoing && (!had || prev.state == stateOutgoing) {
			res.newScraped = append(res.newScraped, t.id)
		}
		next[t.id] = vtarget{job: t.job, addr: t.addr, state: t.state}
	}
	v.targets = next
	v.gen = u.gen
	v.active, v.incoming, v.outgoing = 0, 0, 0
	for _, t := range next {
		switch t.state {
		case stateIncoming:
			v.incoming++
		case stateOutgoing:
			v.outgoing++
		default:
			v.active++
		}
	}
	return res, nil
}

// jobAddr names a target for the exactly-once check.
type jobAddr struct{ job, addr string }

// ownership maps each target scraped and settled (ACTIVE) to the index of
// the view that owns it.
type ownership map[uint64]int

// checkResult is the outcome of checkExactlyOnce.
type checkResult struct {
	ok bool
	// owners: targets ACTIVE on exactly one worker (nil unless ok).
	owners ownership
	// problem says what is wrong when not ok.
	problem string
}

// checkExactlyOnce reports whether the views together hold every expected
// target exactly once: ACTIVE on exactly one view, INCOMING on none
// (every handoff completed), nothing unexpected, and the (job,
// __address__) pairs exactly the expected set. OUTGOING entries (stopped,
// awaiting removal) are allowed. Views may be nil (workers gone).
func checkExactlyOnce(views []*view, expected map[jobAddr]struct{}) checkResult {
	owners := make(ownership, len(expected))
	seen := make(map[jobAddr]struct{}, len(expected))
	for i, v := range views {
		if v == nil {
			continue
		}
		for id, t := range v.targets {
			switch t.state {
			case stateOutgoing:
				continue
			case stateIncoming:
				return checkResult{problem: fmt.Sprintf("target %x (%s %s) still INCOMING on worker %d", id, t.job, t.addr, i)}
			}
			if j, dup := owners[id]; dup {
				return checkResult{problem: fmt.Sprintf("target %x (%s %s) ACTIVE on workers %d and %d", id, t.job, t.addr, j, i)}
			}
			owners[id] = i
			k := jobAddr{t.job, t.addr}
			if _, ok := expected[k]; !ok {
				return checkResult{problem: fmt.Sprintf("target %x (%s %s) on worker %d not expected", id, t.job, t.addr, i)}
			}
			if _, dup := seen[k]; dup {
				return checkResult{problem: fmt.Sprintf("job %s address %s owned under two ids", t.job, t.addr)}
			}
			seen[k] = struct{}{}
		}
	}
	if len(seen) != len(expected) {
		return checkResult{problem: fmt.Sprintf("%d of %d expected targets owned", len(seen), len(expected))}
	}
	return checkResult{ok: true, owners: owners}
}

// moved counts the targets whose owner differs between two ownerships,
// over the targets of either (a target in only one counts as moved).
func moved(before, after ownership) int {
	n := 0
	for id, w := range before {
		if a, ok := after[id]; !ok || a != w {
			n++
		}
	}
	for id := range after {
		if _, ok := before[id]; !ok {
			n++
		}
	}
	return n
}

// sortedCounts returns the per-view target counts of an ownership, sorted.
func sortedCounts(o ownership, nViews int) []int {
	c := make([]int, nViews)
	for _, w := range o {
		c[w]++
	}
	sort.Ints(c)
	return c
}
