package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/shardring"
)

const (
	defaultPageSize     = 1000
	maxPageSize         = 10000
	defaultPreviewLimit = 100
	maxPreviewLimit     = 10000
)

// adminService implements AdminService on a Coordinator.
type adminService struct {
	shardscrapev1.UnimplementedAdminServiceServer
	c *Coordinator
}

var _ shardscrapev1.AdminServiceServer = adminService{}

func (c *Coordinator) workerProto(w *worker) *shardscrapev1.Worker {
	p := &shardscrapev1.Worker{
		Id: w.id, Address: w.address, Zone: w.zone, Capacity: w.capacity, State: w.state, Version: w.version,
		LeaseExpireTime:     timestamppb.New(w.leaseExpiry),
		LastHeartbeatTime:   timestamppb.New(w.lastHeartbeat),
		GenerationSent:      w.lastSent,
		GenerationApplied:   w.applied,
		TargetCount:         uint64(w.holders()),
		OutgoingTargetCount: uint64(len(w.outgoing)),
	}
	for _, t := range w.owned {
		if t == nil {
			continue
		}
		i := t.slotOf(w)
		if i < 0 {
			continue
		}
		if t.slots[i].state == stateIncoming {
			p.IncomingTargetCount++
		}
		if t.slots[i].state != stateOutgoing {
			p.SeriesCount += t.series
		}
	}
	return p
}

func (s adminService) ListWorkers(context.Context, *shardscrapev1.ListWorkersRequest) (*shardscrapev1.ListWorkersResponse, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &shardscrapev1.ListWorkersResponse{}
	for _, id := range slices.Sorted(maps.Keys(c.workers)) {
		resp.Workers = append(resp.Workers, c.workerProto(c.workers[id]))
	}
	return resp, nil
}

func (c *Coordinator) assignedTarget(t *target) *shardscrapev1.AssignedTarget {
	at := &shardscrapev1.AssignedTarget{
		Target:      toTarget(&item{id: t.ID, job: t.Job, lbls: t.Labels}),
		SeriesCount: t.series,
		Up:          t.up,
	}
	at.PinnedWorkerId, _ = c.admin.pinned(t.Job, t.Address)
	at.ExcludeReason, at.Excluded = c.admin.excluded(t.Job, t.Address)
	for _, s := range t.slots {
		at.Owners = append(at.Owners, &shardscrapev1.Owner{WorkerId: s.w.id, State: s.state, Replica: s.replica})
	}
	slices.SortFunc(at.Owners, func(a, b *shardscrapev1.Owner) int {
		return cmp.Or(cmp.Compare(a.Replica, b.Replica), cmp.Compare(a.State, b.State), strings.Compare(a.WorkerId, b.WorkerId))
	})
	return at
}

func (s adminService) ListTargets(_ context.Context, req *shardscrapev1.ListTargetsRequest) (*shardscrapev1.ListTargetsResponse, error) {
	var matchers []*labels.Matcher
	if req.GetSelector() != "" {
		ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(req.GetSelector())
		if err != nil {
			return nil, invalid("selector: %v", err)
		}
		matchers = ms
	}
	var after uint64
	if tok := req.GetPageToken(); tok != "" {
		v, err := strconv.ParseUint(tok, 16, 64)
		if err != nil {
			return nil, invalid("page_token: %q is not one this server gave", tok)
		}
		after = v
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = defaultPageSize
	}
	size = min(size, maxPageSize)
	includeUnassigned := req.GetIncludeUnassigned() || req.GetExcludedOnly()

	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if id := req.GetWorkerId(); id != "" && c.workers[id] == nil {
		return nil, status.Errorf(codes.NotFound, "worker_id: unknown worker %q", id)
	}
	var ids []uint64
	for id, t := range c.targets.all() {
		if req.GetJob() != "" && t.Job != req.GetJob() {
			continue
		}
		_, excluded := c.admin.excluded(t.Job, t.Address)
		_, pinned := c.admin.pinned(t.Job, t.Address)
		if (req.GetPinnedOnly() && !pinned) || (req.GetExcludedOnly() && !excluded) {
			continue
		}
		owned := false
		for _, s := range t.slots {
			if s.state != stateOutgoing {
				owned = true
			}
		}
		if !includeUnassigned && (excluded || !owned) {
			continue
		}
		if req.GetWorkerId() != "" || req.GetState() != stateNew {
			match := false
			for _, s := range t.slots {
				if (req.GetWorkerId() == "" || s.w.id == req.GetWorkerId()) && (req.GetState() == stateNew || s.state == req.GetState()) {
					match = true
				}
			}
			if !match {
				continue
			}
		}
		if !matchLabels(matchers, t.Labels) {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	resp := &shardscrapev1.ListTargetsResponse{Total: uint64(len(ids))}
	i, _ := slices.BinarySearch(ids, after)
	if after != 0 && i < len(ids) && ids[i] == after {
		i++
	}
	for ; i < len(ids) && len(resp.Targets) < size; i++ {
		resp.Targets = append(resp.Targets, c.assignedTarget(c.targets.get(ids[i])))
	}
	if i < len(ids) && len(resp.Targets) > 0 {
		resp.NextPageToken = strconv.FormatUint(ids[i-1], 16)
	}
	return resp, nil
}

func matchLabels(ms []*labels.Matcher, ls labels.Labels) bool {
	for _, m := range ms {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

// resolve returns the targets a reference names. The caller holds c.mu.
func (c *Coordinator) resolve(field string, ref *shardscrapev1.TargetRef) ([]*target, jobAddr, error) {
	switch r := ref.GetRef().(type) {
	case *shardscrapev1.TargetRef_Id:
		t := c.targets.get(r.Id)
		if t == nil {
			return nil, jobAddr{}, status.Errorf(codes.NotFound, "%s: unknown target id %016x", field, r.Id)
		}
		return []*target{t}, jobAddr{t.Job, t.Address}, nil
	case *shardscrapev1.TargetRef_JobAddress:
		ja := jobAddr{r.JobAddress.GetJob(), r.JobAddress.GetAddress()}
		if ja.job == "" || ja.address == "" {
			return nil, ja, invalid("%s: job and address must both be set", field)
		}
		var ts []*target
		for _, t := range c.jobTargets[ja.job] {
			if t.Address == ja.address {
				ts = append(ts, t)
			}
		}
		if len(ts) == 0 {
			return nil, ja, status.Errorf(codes.NotFound, "%s: no target of job %q at address %q", field, ja.job, ja.address)
		}
		slices.SortFunc(ts, func(a, b *target) int { return cmp.Compare(a.ID, b.ID) })
		return ts, ja, nil
	default:
		return nil, jobAddr{}, invalid("%s: must name an id or a job and address", field)
	}
}

func (s adminService) LocateTarget(_ context.Context, req *shardscrapev1.LocateTargetRequest) (*shardscrapev1.LocateTargetResponse, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, ja, err := c.resolve("target", req.GetTarget())
	if err != nil {
		return nil, err
	}
	if len(ts) > 1 {
		names := make([]string, len(ts))
		for i, t := range ts {
			names[i] = fmt.Sprintf("%016x (%s)", t.ID, t.Labels.Get("__metrics_path__"))
		}
		return nil, status.Errorf(codes.FailedPrecondition, "target: job %q address %q matches %d targets, name one by id: %s", ja.job, ja.address, len(ts), strings.Join(names, ", "))
	}
	t := ts[0]
	resp := &shardscrapev1.LocateTargetResponse{Target: c.assignedTarget(t)}
	var owner string
	holders := 0
	handoff := false
	for _, s := range t.slots {
		if s.state == stateIncoming {
			handoff = true
		}
		if s.state != stateOutgoing {
			holders++
			if !s.leaving && s.replica == 0 {
				owner = s.w.id
			}
		}
	}
	if c.ring != nil {
		resp.RingOwner = c.ring.Owner(t.Key)
	}
	switch {
	case resp.Target.Excluded:
		resp.Reason = shardscrapev1.LocateReason_LOCATE_REASON_EXCLUDED
		resp.Detail = "excluded: " + resp.Target.ExcludeReason
	case holders == 0:
		resp.Reason = shardscrapev1.LocateReason_LOCATE_REASON_UNASSIGNED
		resp.Detail = "no worker can take it"
		if c.grace {
			resp.Detail = "waiting for workers to join after a restart"
		}
	case handoff:
		resp.Reason = shardscrapev1.LocateReason_LOCATE_REASON_HANDOFF
		resp.Detail = "moving: the new owner is incoming, the old one scrapes until it acknowledges"
	case t.reason == reasonPinned:
		resp.Reason = shardscrapev1.LocateReason_LOCATE_REASON_PINNED
		resp.Detail = "pinned to " + resp.Target.PinnedWorkerId
	case t.reason == reasonPaused:
		resp.Reason = shardscrapev1.LocateReason_LOCATE_REASON_PAUSED
		resp.Detail = "rebalancing paused (" + c.admin.Reason + "): kept its previous owner " + owner
	case t.reason == reasonKept:
		resp.Reason = shardscrapev1.LocateReason_LOCATE_REASON_KEPT
		resp.Detail = fmt.Sprintf("kept by %s, under its load bound, rather than moved to the ring's placement", owner)
	case resp.RingOwner != "" && owner != "" && owner != resp.RingOwner && c.opts.ReplicationFactor == 1:
		resp.Reason = shardscrapev1.LocateReason_LOCATE_REASON_SPILLED
		bound := 0
		if c.lastAsgn != nil {
			bound = c.lastAsgn.Capacity(resp.RingOwner)
		}
		resp.Detail = fmt.Sprintf("%s at bound %d, spilled to %s", resp.RingOwner, bound, owner)
	default:
		resp.Reason = shardscrapev1.LocateReason_LOCATE_REASON_RING
		resp.Detail = "owner on the ring: " + owner
	}
	return resp, nil
}

func (s adminService) RingStatus(context.Context, *shardscrapev1.RingStatusRequest) (*shardscrapev1.RingStatusResponse, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	ropts := c.opts.Ring
	if ropts.VirtualNodes == 0 {
		ropts.VirtualNodes = shardring.DefaultVirtualNodes
	}
	if ropts.LoadFactor == 0 {
		ropts.LoadFactor = shardring.DefaultLoadFactor
	}
	resp := &shardscrapev1.RingStatusResponse{
		LoadFactor:            ropts.LoadFactor,
		VirtualNodesPerWeight: uint32(ropts.VirtualNodes),
		ReplicationFactor:     uint32(c.opts.ReplicationFactor),
		RebalancingPaused:     c.admin.Paused,
		PauseReason:           c.admin.Reason,
		TargetCount:           uint64(c.targets.len()),
	}
	if c.ring == nil {
		return resp, nil
	}
	frac := c.ring.OwnedFraction()
	members := c.ring.Members()
	total, totalWeight := 0, 0.0
	for _, m := range members {
		total += c.workers[m.ID].holders()
		totalWeight += c.workers[m.ID].capacity
	}
	for _, m := range members {
		w := c.workers[m.ID]
		rm := &shardscrapev1.RingMember{
			Id: m.ID, Zone: m.Zone, Weight: w.capacity,
			VirtualNodes:  uint32(math.Round(float64(ropts.VirtualNodes) * w.capacity)),
			OwnedFraction: frac[m.ID],
			TargetCount:   uint64(w.holders()),
		}
		if c.lastAsgn != nil {
			rm.Bound = uint64(c.lastAsgn.Capacity(m.ID))
		}
		if mean := float64(total) * w.capacity / totalWeight; mean > 0 {
			rm.LoadOverMean = float64(rm.TargetCount) / mean
		}
		resp.Imbalance = max(resp.Imbalance, rm.LoadOverMean)
		resp.Members = append(resp.Members, rm)
	}
	return resp, nil
}

// mutateAdmin applies edit to a copy of the admin state and writes it to
// the bucket; only once written does it become the admin state (and the
// next reconcile reassigns), so a failed write changes nothing. The caller
// holds c.mu.
func (c *Coordinator) mutateAdmin(ctx context.Context, edit func(*adminState)) error {
	next := c.admin.clone()
	edit(&next)
	if err := c.saveAdmin(ctx, next, c.genLimit); err != nil {
		c.logger.Error("Persist admin change", "err", err)
		return status.Errorf(codes.Unavailable, "persist admin change: %v", err)
	}
	c.admin = next
	c.needReconcile = true
	return nil
}

func (c *Coordinator) knownWorker(field, id string) (*worker, error) {
	if err := validWorkerID(field, id); err != nil {
		return nil, err
	}
	w := c.workers[id]
	if w == nil {
		return nil, status.Errorf(codes.NotFound, "%s: unknown worker %q", field, id)
	}
	return w, nil
}

func (s adminService) DrainWorker(ctx context.Context, req *shardscrapev1.DrainWorkerRequest) (*shardscrapev1.DrainWorkerResponse, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	w, err := c.knownWorker("worker_id", req.GetWorkerId())
	if err != nil {
		return nil, err
	}
	if err := c.mutateAdmin(ctx, func(a *adminState) { a.Drained[w.id] = true }); err != nil {
		return nil, err
	}
	moving := w.holders()
	if w.onRing() {
		w.state = shardscrapev1.WorkerState_WORKER_STATE_DRAINING
	}
	c.logger.Info("Draining worker", "worker", w.id, "targets", moving)
	c.reconcile()
	c.commit()
	return &shardscrapev1.DrainWorkerResponse{Worker: c.workerProto(w), MovingTargetCount: uint64(moving)}, nil
}

func (s adminService) UndrainWorker(ctx context.Context, req *shardscrapev1.UndrainWorkerRequest) (*shardscrapev1.UndrainWorkerResponse, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	w, err := c.knownWorker("worker_id", req.GetWorkerId())
	if err != nil {
		return nil, err
	}
	if err := c.mutateAdmin(ctx, func(a *adminState) { delete(a.Drained, w.id) }); err != nil {
		return nil, err
	}
	if !w.leaving && (w.state == shardscrapev1.WorkerState_WORKER_STATE_DRAINING || w.state == shardscrapev1.WorkerState_WORKER_STATE_DRAINED) {
		w.state = shardscrapev1.WorkerState_WORKER_STATE_ACTIVE
	}
	c.reconcile()
	c.commit()
	return &shardscrapev1.UndrainWorkerResponse{Worker: c.workerProto(w)}, nil
}

func (s adminService) PinTarget(ctx context.Context, req *shardscrapev1.PinTargetRequest) (*shardscrapev1.PinTargetResponse, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, ja, err := c.resolve("target", req.GetTarget())
	if err != nil {
		return nil, err
	}
	w, err := c.knownWorker("worker_id", req.GetWorkerId())
	if err != nil {
		return nil, err
	}
	if err := c.mutateAdmin(ctx, func(a *adminState) { a.Pins[ja] = w.id }); err != nil {
		return nil, err
	}
	c.reconcile()
	c.commit()
	return &shardscrapev1.PinTargetResponse{Target: c.assignedTarget(ts[0])}, nil
}

func (s adminService) UnpinTarget(ctx context.Context, req *shardscrapev1.UnpinTargetRequest) (*shardscrapev1.UnpinTargetResponse, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, ja, err := c.resolve("target", req.GetTarget())
	if err != nil {
		return nil, err
	}
	if _, ok := c.admin.Pins[ja]; ok {
		if err := c.mutateAdmin(ctx, func(a *adminState) { delete(a.Pins, ja) }); err != nil {
			return nil, err
		}
		c.reconcile()
		c.commit()
	}
	return &shardscrapev1.UnpinTargetResponse{Target: c.assignedTarget(ts[0])}, nil
}

func (s adminService) ExcludeTarget(ctx context.Context, req *shardscrapev1.ExcludeTargetRequest) (*shardscrapev1.ExcludeTargetResponse, error) {
	if len(req.GetReason()) > 1024 {
		return nil, invalid("reason: longer than 1024 bytes")
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ja, err := c.resolve("target", req.GetTarget())
	if err != nil {
		return nil, err
	}
	if err := c.mutateAdmin(ctx, func(a *adminState) { a.Excludes[ja] = req.GetReason() }); err != nil {
		return nil, err
	}
	c.reconcile()
	c.commit()
	return &shardscrapev1.ExcludeTargetResponse{}, nil
}

func (s adminService) IncludeTarget(ctx context.Context, req *shardscrapev1.IncludeTargetRequest) (*shardscrapev1.IncludeTargetResponse, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ja, err := c.resolve("target", req.GetTarget())
	if err != nil {
		return nil, err
	}
	if _, ok := c.admin.Excludes[ja]; ok {
		if err := c.mutateAdmin(ctx, func(a *adminState) { delete(a.Excludes, ja) }); err != nil {
			return nil, err
		}
		c.reconcile()
		c.commit()
	}
	return &shardscrapev1.IncludeTargetResponse{}, nil
}

func (s adminService) PauseRebalancing(ctx context.Context, req *shardscrapev1.PauseRebalancingRequest) (*shardscrapev1.PauseRebalancingResponse, error) {
	if len(req.GetReason()) > 1024 {
		return nil, invalid("reason: longer than 1024 bytes")
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.mutateAdmin(ctx, func(a *adminState) { a.Paused, a.Reason = true, req.GetReason() }); err != nil {
		return nil, err
	}
	c.logger.Info("Rebalancing paused", "reason", req.GetReason())
	return &shardscrapev1.PauseRebalancingResponse{}, nil
}

func (s adminService) ResumeRebalancing(ctx context.Context, _ *shardscrapev1.ResumeRebalancingRequest) (*shardscrapev1.ResumeRebalancingResponse, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.mutateAdmin(ctx, func(a *adminState) { a.Paused, a.Reason = false, "" }); err != nil {
		return nil, err
	}
	before := c.moves
	c.reconcile()
	c.commit()
	c.logger.Info("Rebalancing resumed", "moved", c.moves-before)
	return &shardscrapev1.ResumeRebalancingResponse{MovedTargetCount: c.moves - before}, nil
}

func (s adminService) PreviewRebalance(_ context.Context, req *shardscrapev1.PreviewRebalanceRequest) (*shardscrapev1.PreviewRebalanceResponse, error) {
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = defaultPreviewLimit
	}
	limit = min(limit, maxPreviewLimit)
	c := s.c
	c.mu.Lock()
	current := map[string]shardring.Member{}
	for _, w := range c.workers {
		if w.onRing() {
			current[w.id] = shardring.Member{ID: w.id, Weight: w.capacity, Zone: w.zone}
		}
	}
	next := maps.Clone(current)
	for i, a := range req.GetAddWorkers() {
		if err := validWorkerID(fmt.Sprintf("add_workers[%d].id", i), a.GetId()); err != nil {
			c.mu.Unlock()
			return nil, err
		}
		if cp := a.GetCapacity(); math.IsNaN(cp) || cp < 0 || cp > 1000 {
			c.mu.Unlock()
			return nil, invalid("add_workers[%d].capacity: %v not in (0, 1000]", i, cp)
		}
		if _, dup := next[a.GetId()]; dup {
			c.mu.Unlock()
			return nil, invalid("add_workers[%d].id: %q is already on the ring", i, a.GetId())
		}
		next[a.GetId()] = shardring.Member{ID: a.GetId(), Weight: a.GetCapacity(), Zone: a.GetZone()}
	}
	for i, id := range req.GetRemoveWorkerIds() {
		if _, ok := current[id]; !ok {
			c.mu.Unlock()
			if c.workers[id] == nil {
				return nil, status.Errorf(codes.NotFound, "remove_worker_ids[%d]: unknown worker %q", i, id)
			}
			return nil, invalid("remove_worker_ids[%d]: worker %q is not on the ring", i, id)
		}
		delete(next, id)
	}
	type row struct {
		id      uint64
		job     string
		address string
		from    string
		to      string
	}
	// The rows and keys in reconcile's order, with its pins and excludes,
	// so that the preview places targets as a rebalance would.
	var rows, placed []row
	var keys []uint64
	var owners []string
	for _, job := range slices.Sorted(maps.Keys(c.jobTargets)) {
		for _, t := range c.jobTargets[job] {
			if _, ok := c.admin.excluded(t.Job, t.Address); ok {
				continue
			}
			r := row{id: t.ID, job: t.Job, address: t.Address}
			for _, s := range t.slots {
				if s.state != stateOutgoing && !s.leaving && s.replica == 0 {
					r.from = s.w.id
				}
			}
			if id, ok := c.admin.pinned(t.Job, t.Address); ok {
				if _, on := next[id]; on {
					r.to = id
					rows = append(rows, r)
					continue
				}
			}
			placed = append(placed, r)
			keys = append(keys, t.Key)
			cur := ""
			if w := currentOwner(t); w != nil {
				cur = w.id
			}
			owners = append(owners, cur)
		}
	}
	oldN := len(current)
	c.mu.Unlock()

	if len(next) > 0 && len(keys) > 0 {
		ms := slices.Collect(maps.Values(next))
		ring, err := shardring.New(ms, c.opts.Ring)
		if err != nil {
			return nil, invalid("add_workers: %v", err)
		}
		members := ring.Members()
		index := make(map[string]int32, len(members))
		for i, m := range members {
			index[m.ID] = int32(i)
		}
		cur := make([]int32, len(owners))
		for i, id := range owners {
			cur[i] = -1
			if m, ok := index[id]; ok {
				cur[i] = m
			}
		}
		for i, m := range placeSticky(ring.Assign(keys), keys, cur) {
			placed[i].to = members[m].ID
		}
	}
	rows = append(rows, placed...)
	resp := &shardscrapev1.PreviewRebalanceResponse{TargetCount: uint64(len(rows))}
	counts := map[[2]string]uint64{}
	var moves []*shardscrapev1.TargetMove
	for _, r := range rows {
		dst := r.to
		if dst == r.from {
			continue
		}
		resp.MovedTargetCount++
		counts[[2]string{r.from, dst}]++
		moves = append(moves, &shardscrapev1.TargetMove{TargetId: r.id, Job: r.job, Address: r.address, FromWorkerId: r.from, ToWorkerId: dst})
	}
	slices.SortFunc(moves, func(a, b *shardscrapev1.TargetMove) int { return cmp.Compare(a.TargetId, b.TargetId) })
	resp.Moves = moves[:min(len(moves), limit)]
	for k, n := range counts {
		resp.Counts = append(resp.Counts, &shardscrapev1.MoveCount{FromWorkerId: k[0], ToWorkerId: k[1], TargetCount: n})
	}
	slices.SortFunc(resp.Counts, func(a, b *shardscrapev1.MoveCount) int {
		return cmp.Or(strings.Compare(a.FromWorkerId, b.FromWorkerId), strings.Compare(a.ToWorkerId, b.ToWorkerId))
	})
	var ideal float64
	if n := len(next); n > 0 {
		ideal += float64(len(rows)) * float64(len(req.GetAddWorkers())) / float64(n)
	}
	if oldN > 0 {
		ideal += float64(len(rows)) * float64(len(req.GetRemoveWorkerIds())) / float64(oldN)
	}
	if ideal > 0 {
		resp.MovedOverIdeal = float64(resp.MovedTargetCount) / ideal
	}
	return resp, nil
}
