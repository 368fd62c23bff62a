package coordinator

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Object names under Options.StatePrefix.
const (
	adminObject      = "admin.json"
	assignmentObject = "assignment.bin"
	assignmentMagic  = "SSA1"
)

// jobAddr names targets by job and discovered __address__, as pins and
// excludes are stored.
type jobAddr struct{ job, address string }

// adminState is what the admin API changes; it is written to the bucket
// before a mutation returns.
type adminState struct {
	Pins     map[jobAddr]string // → worker id
	Excludes map[jobAddr]string // → reason
	Drained  map[string]bool
	Paused   bool
	Reason   string
}

func newAdminState() adminState {
	return adminState{Pins: map[jobAddr]string{}, Excludes: map[jobAddr]string{}, Drained: map[string]bool{}}
}

func (a adminState) clone() adminState {
	return adminState{Pins: maps.Clone(a.Pins), Excludes: maps.Clone(a.Excludes), Drained: maps.Clone(a.Drained), Paused: a.Paused, Reason: a.Reason}
}

func (a adminState) pinned(job, address string) (string, bool) {
	if len(a.Pins) == 0 {
		return "", false
	}
	id, ok := a.Pins[jobAddr{job, address}]
	return id, ok
}

func (a adminState) excluded(job, address string) (string, bool) {
	if len(a.Excludes) == 0 {
		return "", false
	}
	r, ok := a.Excludes[jobAddr{job, address}]
	return r, ok
}

// stateFile is adminObject's JSON.
type stateFile struct {
	Version         int          `json:"version"`
	GenerationLimit uint64       `json:"generation_limit"`
	Pins            []pinRecord  `json:"pins,omitempty"`
	Excludes        []exclRecord `json:"excludes,omitempty"`
	Drained         []string     `json:"drained,omitempty"`
	Paused          bool         `json:"paused,omitempty"`
	PauseReason     string       `json:"pause_reason,omitempty"`
}

type pinRecord struct {
	Job     string `json:"job"`
	Address string `json:"address"`
	Worker  string `json:"worker"`
}

type exclRecord struct {
	Job     string `json:"job"`
	Address string `json:"address"`
	Reason  string `json:"reason,omitempty"`
}

func cmpJobAddr(a, b jobAddr) int {
	if c := strings.Compare(a.job, b.job); c != 0 {
		return c
	}
	return strings.Compare(a.address, b.address)
}

// saveAdmin writes the admin state and the reserved generation limit.
func (c *Coordinator) saveAdmin(ctx context.Context, a adminState, genLimit uint64) error {
	if c.bucket == nil {
		return nil
	}
	f := stateFile{Version: 1, GenerationLimit: genLimit, Paused: a.Paused, PauseReason: a.Reason}
	for _, k := range slices.SortedFunc(maps.Keys(a.Pins), cmpJobAddr) {
		f.Pins = append(f.Pins, pinRecord{Job: k.job, Address: k.address, Worker: a.Pins[k]})
	}
	for _, k := range slices.SortedFunc(maps.Keys(a.Excludes), cmpJobAddr) {
		f.Excludes = append(f.Excludes, exclRecord{Job: k.job, Address: k.address, Reason: a.Excludes[k]})
	}
	f.Drained = slices.Sorted(maps.Keys(a.Drained))
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode admin state: %w", err)
	}
	if err := c.bucket.Upload(ctx, c.opts.StatePrefix+adminObject, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("write admin state %s: %w", c.opts.StatePrefix+adminObject, err)
	}
	return nil
}

// load reads the admin state and the last assignment. With a previous
// assignment, the coordinator starts in its startup grace.
func (c *Coordinator) load(ctx context.Context) error {
	if c.bucket == nil {
		return nil
	}
	name := c.opts.StatePrefix + adminObject
	b, err := c.read(ctx, name)
	if err != nil {
		return err
	}
	if b != nil {
		var f stateFile
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("decode admin state %s: %w", name, err)
		}
		a := newAdminState()
		for _, p := range f.Pins {
			a.Pins[jobAddr{p.Job, p.Address}] = p.Worker
		}
		for _, e := range f.Excludes {
			a.Excludes[jobAddr{e.Job, e.Address}] = e.Reason
		}
		for _, id := range f.Drained {
			a.Drained[id] = true
		}
		a.Paused, a.Reason = f.Paused, f.PauseReason
		c.admin = a
		c.gen, c.genLimit = f.GenerationLimit, f.GenerationLimit
	}
	name = c.opts.StatePrefix + assignmentObject
	b, err = c.read(ctx, name)
	if err != nil {
		return err
	}
	if b != nil {
		prev, gen, err := decodeAssignment(b)
		if err != nil {
			return fmt.Errorf("decode assignment %s: %w", name, err)
		}
		c.gen, c.genLimit = max(c.gen, gen), max(c.genLimit, gen)
		c.prevOwners = prev
		c.prevIDs = map[string]struct{}{}
		for _, os := range prev {
			for _, o := range os {
				c.prevIDs[o] = struct{}{}
			}
		}
	}
	if len(c.prevIDs) > 0 {
		c.grace = true
		c.graceUntil = c.opts.Now().Add(c.opts.LeaseTTL)
		c.logger.Info("Loaded state: waiting for workers to join again", "workers", len(c.prevIDs), "targets", len(c.prevOwners), "grace", c.opts.LeaseTTL)
	}
	c.metrics.generation.Set(float64(c.gen))
	return nil
}

func (c *Coordinator) read(ctx context.Context, name string) ([]byte, error) {
	r, err := c.bucket.Get(ctx, name)
	if err != nil {
		if c.bucket.IsObjNotFoundErr(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read state %s: %w", name, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", name, err)
	}
	return b, nil
}

// saveAssignment writes the owners of every target when they changed and
// SaveInterval passed since the last write (or force).
func (c *Coordinator) saveAssignment(ctx context.Context, force bool) error {
	if c.bucket == nil {
		return nil
	}
	c.mu.Lock()
	now := c.opts.Now()
	if c.grace || !c.assignDirty || (!force && now.Sub(c.lastSave) < c.opts.SaveInterval) {
		c.mu.Unlock()
		return nil
	}
	b := c.encodeAssignment()
	c.assignDirty = false
	c.lastSave = now
	c.mu.Unlock()
	if err := c.bucket.Upload(ctx, c.opts.StatePrefix+assignmentObject, bytes.NewReader(b)); err != nil {
		c.mu.Lock()
		c.assignDirty = true
		c.mu.Unlock()
		return fmt.Errorf("write assignment: %w", err)
	}
	return nil
}

// encodeAssignment encodes target id → owners (not outgoing, by replica).
// The caller holds c.mu.
func (c *Coordinator) encodeAssignment() []byte {
	ids := slices.Sorted(maps.Keys(c.workers))
	index := make(map[string]int, len(ids))
	for i, id := range ids {
		index[id] = i
	}
	b := make([]byte, 0, 16+c.targets.len()*11)
	b = append(b, assignmentMagic...)
	b = binary.AppendUvarint(b, c.gen)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = binary.AppendUvarint(b, uint64(len(id)))
		b = append(b, id...)
	}
	n := 0
	for _, t := range c.targets.all() {
		if len(t.slots) > 0 {
			n++
		}
	}
	b = binary.AppendUvarint(b, uint64(n))
	var owners []int
	for _, t := range c.targets.all() {
		if len(t.slots) == 0 {
			continue
		}
		owners = owners[:0]
		for _, s := range t.slots {
			if s.state != stateOutgoing && !s.leaving {
				owners = append(owners, index[s.w.id])
			}
		}
		if len(owners) == 0 {
			for _, s := range t.slots {
				if s.state != stateOutgoing {
					owners = append(owners, index[s.w.id])
				}
			}
		}
		b = binary.LittleEndian.AppendUint64(b, t.ID)
		b = binary.AppendUvarint(b, uint64(len(owners)))
		for _, o := range owners {
			b = binary.AppendUvarint(b, uint64(o))
		}
	}
	return b
}

var errCorrupt = errors.New("corrupt assignment")

func decodeAssignment(b []byte) (map[uint64][]string, uint64, error) {
	if !bytes.HasPrefix(b, []byte(assignmentMagic)) {
		return nil, 0, fmt.Errorf("%w: bad magic", errCorrupt)
	}
	r := bytes.NewReader(b[len(assignmentMagic):])
	gen, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: generation: %w", errCorrupt, err)
	}
	nw, err := binary.ReadUvarint(r)
	if err != nil || nw > 1<<16 {
		return nil, 0, fmt.Errorf("%w: worker count", errCorrupt)
	}
	ids := make([]string, nw)
	for i := range ids {
		l, err := binary.ReadUvarint(r)
		if err != nil || l > 1<<10 {
			return nil, 0, fmt.Errorf("%w: worker id", errCorrupt)
		}
		s := make([]byte, l)
		if _, err := io.ReadFull(r, s); err != nil {
			return nil, 0, fmt.Errorf("%w: worker id: %w", errCorrupt, err)
		}
		ids[i] = string(s)
	}
	nt, err := binary.ReadUvarint(r)
	if err != nil || nt > uint64(len(b)) {
		return nil, 0, fmt.Errorf("%w: target count", errCorrupt)
	}
	prev := make(map[uint64][]string, nt)
	var idb [8]byte
	for range nt {
		if _, err := io.ReadFull(r, idb[:]); err != nil {
			return nil, 0, fmt.Errorf("%w: target id: %w", errCorrupt, err)
		}
		no, err := binary.ReadUvarint(r)
		if err != nil || no > 64 {
			return nil, 0, fmt.Errorf("%w: owner count", errCorrupt)
		}
		os := make([]string, 0, no)
		for range no {
			o, err := binary.ReadUvarint(r)
			if err != nil || o >= nw {
				return nil, 0, fmt.Errorf("%w: owner", errCorrupt)
			}
			os = append(os, ids[o])
		}
		prev[binary.LittleEndian.Uint64(idb[:])] = os
	}
	return prev, gen, nil
}
