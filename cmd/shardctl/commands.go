package main

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

type action func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error

// action validates the command's arguments, before any call (a usage
// error), and returns what the command does.
func (c *cli) action(cmd string) (action, error) {
	switch cmd {
	case "workers":
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.ListWorkers(ctx, &shardscrapev1.ListWorkersRequest{})
			if err != nil {
				return err
			}
			return c.print(resp, func() { c.printWorkers(resp.GetWorkers()) })
		}, nil

	case "targets":
		req := &shardscrapev1.ListTargetsRequest{
			Job:               c.targets.job,
			WorkerId:          c.targets.worker,
			Selector:          c.targets.selector,
			IncludeUnassigned: c.targets.unassigned,
			PinnedOnly:        c.targets.pinned,
			ExcludedOnly:      c.targets.excluded,
			PageSize:          c.targets.pageSize,
		}
		if c.targets.limit > 0 && (req.PageSize == 0 || req.PageSize > c.targets.limit) {
			req.PageSize = c.targets.limit
		}
		switch c.targets.state {
		case "active":
			req.State = shardscrapev1.TargetState_TARGET_STATE_ACTIVE
		case "incoming":
			req.State = shardscrapev1.TargetState_TARGET_STATE_INCOMING
		case "outgoing":
			req.State = shardscrapev1.TargetState_TARGET_STATE_OUTGOING
		}
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := c.listTargets(ctx, ac, req)
			if err != nil {
				return err
			}
			return c.print(resp, func() { c.printTargets(resp) })
		}, nil

	case "locate":
		ref, err := parseTarget(c.locate.target)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.LocateTarget(ctx, &shardscrapev1.LocateTargetRequest{Target: ref})
			if err != nil {
				return about(err, "target %q", c.locate.target)
			}
			return c.print(resp, func() { c.printLocate(resp) })
		}, nil

	case "ring":
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.RingStatus(ctx, &shardscrapev1.RingStatusRequest{})
			if err != nil {
				return err
			}
			return c.print(resp, func() { c.printRing(resp) })
		}, nil

	case "drain":
		id := c.drain.worker
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.DrainWorker(ctx, &shardscrapev1.DrainWorkerRequest{WorkerId: id})
			if err != nil {
				return about(err, "worker %q", id)
			}
			return c.print(resp, func() {
				fmt.Fprintf(c.stdout, "worker %q %s: %d targets moving off it\n", id, stateName(resp.GetWorker().GetState().String(), "WORKER_STATE_"), resp.GetMovingTargetCount())
			})
		}, nil

	case "undrain":
		id := c.undrain.worker
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.UndrainWorker(ctx, &shardscrapev1.UndrainWorkerRequest{WorkerId: id})
			if err != nil {
				return about(err, "worker %q", id)
			}
			return c.print(resp, func() {
				fmt.Fprintf(c.stdout, "worker %q %s\n", id, stateName(resp.GetWorker().GetState().String(), "WORKER_STATE_"))
			})
		}, nil

	case "pin":
		ref, err := parseTarget(c.pin.target)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.PinTarget(ctx, &shardscrapev1.PinTargetRequest{Target: ref, WorkerId: c.pinWorker})
			if err != nil {
				return about(err, "target %q or worker %q", c.pin.target, c.pinWorker)
			}
			return c.print(resp, func() {
				fmt.Fprintf(c.stdout, "pinned %s to worker %q\n", c.pin.target, c.pinWorker)
				c.printAssigned([]*shardscrapev1.AssignedTarget{resp.GetTarget()}, false)
			})
		}, nil

	case "unpin":
		ref, err := parseTarget(c.unpin.target)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.UnpinTarget(ctx, &shardscrapev1.UnpinTargetRequest{Target: ref})
			if err != nil {
				return about(err, "target %q", c.unpin.target)
			}
			return c.print(resp, func() {
				fmt.Fprintf(c.stdout, "unpinned %s\n", c.unpin.target)
				c.printAssigned([]*shardscrapev1.AssignedTarget{resp.GetTarget()}, false)
			})
		}, nil

	case "exclude":
		ref, err := parseTarget(c.exclude.target)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.ExcludeTarget(ctx, &shardscrapev1.ExcludeTargetRequest{Target: ref, Reason: c.excludeReason})
			if err != nil {
				return about(err, "target %q", c.exclude.target)
			}
			return c.print(resp, func() { fmt.Fprintf(c.stdout, "excluded %s\n", c.exclude.target) })
		}, nil

	case "include":
		ref, err := parseTarget(c.include.target)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.IncludeTarget(ctx, &shardscrapev1.IncludeTargetRequest{Target: ref})
			if err != nil {
				return about(err, "target %q", c.include.target)
			}
			return c.print(resp, func() { fmt.Fprintf(c.stdout, "included %s\n", c.include.target) })
		}, nil

	case "pause":
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.PauseRebalancing(ctx, &shardscrapev1.PauseRebalancingRequest{Reason: c.pauseReason})
			if err != nil {
				return err
			}
			return c.print(resp, func() { fmt.Fprintln(c.stdout, "rebalancing paused") })
		}, nil

	case "resume":
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.ResumeRebalancing(ctx, &shardscrapev1.ResumeRebalancingRequest{})
			if err != nil {
				return err
			}
			return c.print(resp, func() {
				fmt.Fprintf(c.stdout, "rebalancing resumed: %d targets moved\n", resp.GetMovedTargetCount())
			})
		}, nil

	case "preview":
		req := &shardscrapev1.PreviewRebalanceRequest{RemoveWorkerIds: c.preview.remove, Limit: c.preview.limit}
		for _, s := range c.preview.add {
			w, err := parseWorkerSpec(s)
			if err != nil {
				return nil, fmt.Errorf("--add: %w", err)
			}
			req.AddWorkers = append(req.AddWorkers, w)
		}
		return func(ctx context.Context, ac shardscrapev1.AdminServiceClient) error {
			resp, err := ac.PreviewRebalance(ctx, req)
			if err != nil {
				return about(err, "a worker of the preview")
			}
			return c.print(resp, func() { c.printPreview(resp) })
		}, nil
	}
	return nil, fmt.Errorf("unknown command %q", cmd)
}

// listTargets fetches pages until the last one, or until --limit targets,
// and returns them as one response: total is the server's count over all
// pages, and next_page_token is left empty.
func (c *cli) listTargets(ctx context.Context, ac shardscrapev1.AdminServiceClient, req *shardscrapev1.ListTargetsRequest) (*shardscrapev1.ListTargetsResponse, error) {
	all := &shardscrapev1.ListTargetsResponse{}
	seen := map[string]bool{}
	for {
		resp, err := ac.ListTargets(ctx, req)
		if err != nil {
			if req.WorkerId != "" {
				return nil, about(err, "worker %q", req.WorkerId)
			}
			return nil, err
		}
		all.Targets = append(all.Targets, resp.GetTargets()...)
		all.Total = resp.GetTotal()
		if c.targets.limit > 0 && uint32(len(all.Targets)) >= c.targets.limit {
			if uint32(len(all.Targets)) > c.targets.limit {
				all.Targets = all.Targets[:c.targets.limit]
			}
			return all, nil
		}
		tok := resp.GetNextPageToken()
		if tok == "" {
			return all, nil
		}
		if seen[tok] {
			return nil, fmt.Errorf("the coordinator repeated page token %q", tok)
		}
		seen[tok] = true
		req = proto.CloneOf(req)
		req.PageToken = tok
	}
}
