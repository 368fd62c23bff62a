package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// print writes resp as JSON with -o json, or calls table otherwise.
func (c *cli) print(resp proto.Message, table func()) error {
	if c.output == "json" {
		b, err := protojson.Marshal(resp)
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		// protojson varies its white space on purpose; settle it, so
		// that the output is stable for diffs and scripts.
		var out bytes.Buffer
		if err := json.Indent(&out, b, "", "  "); err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		out.WriteByte('\n')
		_, err = c.stdout.Write(out.Bytes())
		return err
	}
	table()
	return nil
}

func (c *cli) wide() bool { return c.output == "wide" }

func (c *cli) tab() *tabwriter.Writer {
	return tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
}

func row(w *tabwriter.Writer, cells ...string) {
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

func (c *cli) printWorkers(ws []*shardscrapev1.Worker) {
	w := c.tab()
	head := []string{"ID", "STATE", "ZONE", "CAPACITY", "TARGETS", "IN", "OUT", "SERIES", "GEN SENT", "GEN APPLIED", "HEARTBEAT"}
	if c.wide() {
		head = append(head, "LEASE EXPIRES", "ADDRESS", "VERSION")
	}
	row(w, head...)
	for _, x := range ws {
		cells := []string{
			x.GetId(),
			stateName(x.GetState().String(), "WORKER_STATE_"),
			dash(x.GetZone()),
			formatFloat(x.GetCapacity()),
			u(x.GetTargetCount()), u(x.GetIncomingTargetCount()), u(x.GetOutgoingTargetCount()),
			u(x.GetSeriesCount()),
			u(x.GetGenerationSent()), u(x.GetGenerationApplied()),
			c.ago(x.GetLastHeartbeatTime()),
		}
		if c.wide() {
			cells = append(cells, c.in(x.GetLeaseExpireTime()), dash(x.GetAddress()), dash(x.GetVersion()))
		}
		row(w, cells...)
	}
	_ = w.Flush()
}

func (c *cli) printTargets(resp *shardscrapev1.ListTargetsResponse) {
	c.printAssigned(resp.GetTargets(), true)
	if uint64(len(resp.GetTargets())) < resp.GetTotal() {
		fmt.Fprintf(c.stderr, "showing %d of %d targets\n", len(resp.GetTargets()), resp.GetTotal())
	}
}

// printAssigned prints one line per target.
func (c *cli) printAssigned(ts []*shardscrapev1.AssignedTarget, header bool) {
	w := c.tab()
	head := []string{"ID", "JOB", "ADDRESS", "OWNERS", "SERIES", "UP", "PINNED", "EXCLUDED"}
	if c.wide() {
		head = append(head, "LABELS")
	}
	if header {
		row(w, head...)
	}
	for _, t := range ts {
		tg := t.GetTarget()
		excluded := "-"
		if t.GetExcluded() {
			excluded = "yes"
			if t.GetExcludeReason() != "" {
				excluded += ": " + t.GetExcludeReason()
			}
		}
		cells := []string{
			formatTargetID(tg.GetId()), tg.GetJob(), dash(address(tg)), owners(t.GetOwners()),
			u(t.GetSeriesCount()), yesNo(t.GetUp()), dash(t.GetPinnedWorkerId()), excluded,
		}
		if c.wide() {
			cells = append(cells, labelString(tg.GetLabels()))
		}
		row(w, cells...)
	}
	_ = w.Flush()
}

func (c *cli) printLocate(resp *shardscrapev1.LocateTargetResponse) {
	t := resp.GetTarget()
	tg := t.GetTarget()
	w := c.tab()
	row(w, "TARGET", formatTargetID(tg.GetId()))
	row(w, "JOB", tg.GetJob())
	row(w, "ADDRESS", dash(address(tg)))
	row(w, "OWNERS", owners(t.GetOwners()))
	row(w, "REASON", stateName(resp.GetReason().String(), "LOCATE_REASON_"))
	row(w, "RING OWNER", dash(resp.GetRingOwner()))
	row(w, "DETAIL", dash(resp.GetDetail()))
	row(w, "PINNED", dash(t.GetPinnedWorkerId()))
	excluded := yesNo(t.GetExcluded())
	if t.GetExcludeReason() != "" {
		excluded += ": " + t.GetExcludeReason()
	}
	row(w, "EXCLUDED", excluded)
	row(w, "SERIES", u(t.GetSeriesCount()))
	row(w, "UP", yesNo(t.GetUp()))
	if c.wide() {
		row(w, "LABELS", labelString(tg.GetLabels()))
	}
	_ = w.Flush()
}

func (c *cli) printRing(resp *shardscrapev1.RingStatusResponse) {
	paused := "active"
	if resp.GetRebalancingPaused() {
		paused = "paused"
		if resp.GetPauseReason() != "" {
			paused += " (" + resp.GetPauseReason() + ")"
		}
	}
	fmt.Fprintf(c.stdout, "members %d, targets %d, load factor %s, virtual nodes per weight %d, replication factor %d, imbalance %.3f, rebalancing %s\n\n",
		len(resp.GetMembers()), resp.GetTargetCount(), formatFloat(resp.GetLoadFactor()), resp.GetVirtualNodesPerWeight(),
		resp.GetReplicationFactor(), resp.GetImbalance(), paused)
	w := c.tab()
	row(w, "ID", "ZONE", "WEIGHT", "VNODES", "OWNED", "TARGETS", "BOUND", "LOAD/MEAN")
	for _, m := range resp.GetMembers() {
		row(w, m.GetId(), dash(m.GetZone()), formatFloat(m.GetWeight()), strconv.FormatUint(uint64(m.GetVirtualNodes()), 10),
			fmt.Sprintf("%.2f%%", 100*m.GetOwnedFraction()), u(m.GetTargetCount()), u(m.GetBound()), fmt.Sprintf("%.3f", m.GetLoadOverMean()))
	}
	_ = w.Flush()
}

func (c *cli) printPreview(resp *shardscrapev1.PreviewRebalanceResponse) {
	fmt.Fprintf(c.stdout, "targets %d, moving %d, moved over ideal %.3f\n", resp.GetTargetCount(), resp.GetMovedTargetCount(), resp.GetMovedOverIdeal())
	if len(resp.GetCounts()) > 0 {
		fmt.Fprintln(c.stdout)
		w := c.tab()
		row(w, "FROM", "TO", "TARGETS")
		for _, m := range resp.GetCounts() {
			row(w, dash(m.GetFromWorkerId()), dash(m.GetToWorkerId()), u(m.GetTargetCount()))
		}
		_ = w.Flush()
	}
	if len(resp.GetMoves()) > 0 {
		fmt.Fprintln(c.stdout)
		w := c.tab()
		row(w, "ID", "JOB", "ADDRESS", "FROM", "TO")
		for _, m := range resp.GetMoves() {
			row(w, formatTargetID(m.GetTargetId()), m.GetJob(), dash(m.GetAddress()), dash(m.GetFromWorkerId()), dash(m.GetToWorkerId()))
		}
		_ = w.Flush()
		if uint64(len(resp.GetMoves())) < resp.GetMovedTargetCount() {
			fmt.Fprintf(c.stderr, "listing %d of %d moves (--limit)\n", len(resp.GetMoves()), resp.GetMovedTargetCount())
		}
	}
}

// owners prints a target's owners: "scraper-1", or during a move
// "scraper-1 (outgoing), scraper-4 (incoming)"; replicas after a "#".
func owners(os []*shardscrapev1.Owner) string {
	if len(os) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(os))
	for _, o := range os {
		s := o.GetWorkerId()
		if o.GetReplica() > 0 {
			s += "#" + strconv.FormatUint(uint64(o.GetReplica()), 10)
		}
		if st := o.GetState(); st != shardscrapev1.TargetState_TARGET_STATE_ACTIVE && st != shardscrapev1.TargetState_TARGET_STATE_UNSPECIFIED {
			s += " (" + stateName(st.String(), "TARGET_STATE_") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func address(t *shardscrapev1.Target) string {
	for _, l := range t.GetLabels() {
		if l.GetName() == "__address__" {
			return l.GetValue()
		}
	}
	return ""
}

func labelString(ls []*shardscrapev1.Label) string {
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		parts = append(parts, l.GetName()+"="+strconv.Quote(l.GetValue()))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ", ") + "}"
}

func (c *cli) ago(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return c.now().Sub(ts.AsTime()).Round(time.Second).String() + " ago"
}

func (c *cli) in(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	d := ts.AsTime().Sub(c.now()).Round(time.Second)
	if d < 0 {
		return (-d).String() + " ago"
	}
	return "in " + d.String()
}

func u(n uint64) string { return strconv.FormatUint(n, 10) }

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
