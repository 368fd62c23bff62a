package scraper

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"

	"github.com/shardscrape/shardscrape/internal/promcfg"
	pb "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// Errors that make the worker reconnect its assignment stream for a
// snapshot rather than apply an update.
var (
	// ErrBaseMismatch: a delta's base_generation is not the generation the
	// worker holds.
	ErrBaseMismatch = errors.New("delta does not apply to the generation held")
	// ErrUnknownConfig: a scrape config arrived without its text and the
	// worker does not hold that hash.
	ErrUnknownConfig = errors.New("scrape config hash not held")
)

// assignment is what the worker holds: the merged result of a snapshot and
// the deltas after it. It is never modified in place; apply returns a new
// one.
type assignment struct {
	generation uint64
	global     *pb.GlobalConfig
	configs    map[string]*pb.ScrapeConfig // by job, with text
	targets    map[uint64]*pb.Target
}

func emptyAssignment() *assignment {
	return &assignment{configs: map[string]*pb.ScrapeConfig{}, targets: map[uint64]*pb.Target{}}
}

// scraped reports whether the worker scrapes a target in state s.
func scraped(s pb.TargetState) bool { return s != pb.TargetState_TARGET_STATE_OUTGOING }

// mergeParts adds the fields of part to acc (one update split into parts).
func mergeParts(acc, part *pb.WatchAssignmentsResponse) *pb.WatchAssignmentsResponse {
	if acc == nil {
		return proto.Clone(part).(*pb.WatchAssignmentsResponse)
	}
	if part.Global != nil {
		acc.Global = part.Global
	}
	acc.Configs = append(acc.Configs, part.Configs...)
	acc.RemovedJobs = append(acc.RemovedJobs, part.RemovedJobs...)
	acc.Upserts = append(acc.Upserts, part.Upserts...)
	acc.RemovedTargetIds = append(acc.RemovedTargetIds, part.RemovedTargetIds...)
	acc.Partial = part.Partial
	return acc
}

// applyResult is what applying an update changes.
type applyResult struct {
	next *assignment
	// configChanged: the global config or the set of scrape configs
	// changed, so the Prometheus config must be rebuilt.
	configChanged bool
	// noStaleness: targets the worker scraped and must stop without
	// end-of-run staleness markers (now outgoing, or left out of a
	// snapshot), by id, with their job.
	noStaleness map[uint64]string
}

// apply computes the assignment after update u. bodies resolves scrape
// configs sent without text, by hash.
func (a *assignment) apply(u *pb.WatchAssignmentsResponse, bodies map[string][]byte) (*applyResult, error) {
	if !u.Snapshot && u.BaseGeneration != a.generation {
		return nil, fmt.Errorf("%w: delta from %d to %d, holding %d", ErrBaseMismatch, u.BaseGeneration, u.Generation, a.generation)
	}
	next := &assignment{generation: u.Generation, global: a.global, configs: map[string]*pb.ScrapeConfig{}, targets: map[uint64]*pb.Target{}}
	if !u.Snapshot {
		for k, v := range a.configs {
			next.configs[k] = v
		}
		for k, v := range a.targets {
			next.targets[k] = v
		}
	}
	if u.Global != nil {
		next.global = u.Global
	}
	for _, c := range u.Configs {
		if len(c.Yaml) == 0 {
			body, ok := bodies[c.Hash]
			if !ok {
				return nil, fmt.Errorf("%w: job %q hash %q", ErrUnknownConfig, c.JobName, c.Hash)
			}
			c = &pb.ScrapeConfig{Hash: c.Hash, JobName: c.JobName, Yaml: body, ConfigDir: c.ConfigDir}
		}
		next.configs[c.JobName] = c
	}
	if !u.Snapshot {
		for _, job := range u.RemovedJobs {
			delete(next.configs, job)
			for id, t := range next.targets {
				if t.Job == job {
					delete(next.targets, id)
				}
			}
		}
		for _, id := range u.RemovedTargetIds {
			delete(next.targets, id)
		}
	}
	for _, t := range u.Upserts {
		next.targets[t.Id] = t
	}

	res := &applyResult{next: next, noStaleness: map[uint64]string{}}
	for id, old := range a.targets {
		if !scraped(old.State) {
			continue
		}
		nt, ok := next.targets[id]
		switch {
		case ok && !scraped(nt.State):
			// Moved away: its new owner scrapes it now.
			res.noStaleness[id] = old.Job
		case !ok && u.Snapshot:
			// Moved on while the worker was away.
			res.noStaleness[id] = old.Job
		}
	}
	res.configChanged = a.global.GetHash() != next.global.GetHash() || len(a.configs) != len(next.configs)
	for job, c := range next.configs {
		if oc, ok := a.configs[job]; !ok || oc.Hash != c.Hash {
			res.configChanged = true
		}
	}
	return res, nil
}

// promParts converts the assignment's configs for promcfg.Build, sorted by
// job name.
func (a *assignment) promParts() (promcfg.Global, []promcfg.Job) {
	g := promcfg.Global{YAML: a.global.GetYaml(), Dir: a.global.GetConfigDir()}
	if ls := a.global.GetExternalLabels(); len(ls) > 0 {
		b := labels.NewScratchBuilder(len(ls))
		for _, l := range ls {
			b.Add(l.Name, l.Value)
		}
		b.Sort()
		g.ExternalLabels = b.Labels()
	}
	jobs := make([]promcfg.Job, 0, len(a.configs))
	for _, c := range a.configs {
		jobs = append(jobs, promcfg.Job{Name: c.JobName, Hash: c.Hash, YAML: c.Yaml, Dir: c.ConfigDir})
	}
	slices.SortFunc(jobs, func(x, y promcfg.Job) int { return cmp.Compare(x.Name, y.Name) })
	return g, jobs
}

// targetGroups returns the scrape manager's input: every configured job,
// with one group per scraped target (Source is the target id, the only
// target its discovered labels). Jobs without targets get an empty list,
// so that their scrape pools drop what they ran.
func (a *assignment) targetGroups() map[string][]*targetgroup.Group {
	tsets := make(map[string][]*targetgroup.Group, len(a.configs))
	for job := range a.configs {
		tsets[job] = []*targetgroup.Group{}
	}
	for id, t := range a.targets {
		if !scraped(t.State) {
			continue
		}
		if _, ok := tsets[t.Job]; !ok {
			continue // no config for it: nothing to scrape it with
		}
		ls := make(model.LabelSet, len(t.Labels))
		for _, l := range t.Labels {
			ls[model.LabelName(l.Name)] = model.LabelValue(l.Value)
		}
		tsets[t.Job] = append(tsets[t.Job], &targetgroup.Group{
			Source:  strconv.FormatUint(id, 16),
			Targets: []model.LabelSet{ls},
		})
	}
	return tsets
}

// snapshot returns the assignment as one snapshot message: the state file's
// content. Sorted, so equal assignments give equal bytes.
func (a *assignment) snapshot() *pb.WatchAssignmentsResponse {
	s := &pb.WatchAssignmentsResponse{Generation: a.generation, Snapshot: true, Global: a.global}
	for _, c := range a.configs {
		s.Configs = append(s.Configs, c)
	}
	slices.SortFunc(s.Configs, func(x, y *pb.ScrapeConfig) int { return cmp.Compare(x.JobName, y.JobName) })
	for _, t := range a.targets {
		s.Upserts = append(s.Upserts, t)
	}
	slices.SortFunc(s.Upserts, func(x, y *pb.Target) int { return cmp.Compare(x.Id, y.Id) })
	return s
}

// stateFile is the name of the persisted assignment under the storage path.
const stateFile = "shardscrape-assignment.pb"

// writeState persists a snapshot atomically: a temporary file, fsync,
// rename over the old one, fsync of the directory.
func writeState(dir string, s *pb.WatchAssignmentsResponse) error {
	b, err := proto.Marshal(s)
	if err != nil {
		return fmt.Errorf("marshal assignment: %w", err)
	}
	path := filepath.Join(dir, stateFile)
	f, err := os.CreateTemp(dir, stateFile+".tmp*")
	if err != nil {
		return fmt.Errorf("write assignment: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write assignment %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync assignment %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close assignment %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename assignment to %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// readState loads the persisted snapshot; a missing file gives nil, nil.
func readState(dir string) (*pb.WatchAssignmentsResponse, error) {
	path := filepath.Join(dir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read assignment: %w", err)
	}
	s := &pb.WatchAssignmentsResponse{}
	if err := proto.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("parse assignment %s: %w", path, err)
	}
	if !s.Snapshot {
		return nil, fmt.Errorf("parse assignment %s: not a snapshot", path)
	}
	return s, nil
}
