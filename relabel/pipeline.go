package relabel

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"go.yaml.in/yaml/v2"

	"github.com/shardscrape/shardscrape/internal/targetid"
)

// Ownership key modes (PipelineOptions.OwnershipKey).
const (
	// OwnershipKeyLabels keys a target by its identity after relabeling
	// (Target.ID): the default.
	OwnershipKeyLabels = "labels"
	// OwnershipKeyAddress keys a target by its discovered __address__ alone,
	// so every job's targets at one address have one owner.
	OwnershipKeyAddress = "address"
)

// TargetLabels name the plain target labels enrichment adds from a pod; an
// empty name leaves that label out.
type TargetLabels struct {
	Pod, Namespace, Node, PodIP string
}

// DefaultTargetLabels are the target labels added unless configured
// otherwise.
var DefaultTargetLabels = TargetLabels{Pod: "pod", Namespace: "namespace", Node: "node", PodIP: "pod_ip"}

func (t TargetLabels) validate() error {
	for _, n := range []string{t.Pod, t.Namespace, t.Node, t.PodIP} {
		if n != "" && (!model.LegacyValidation.IsValidLabelName(n) || strings.HasPrefix(n, model.ReservedLabelPrefix)) {
			return fmt.Errorf("pod target label %q: invalid or reserved label name", n)
		}
	}
	return nil
}

// PipelineOptions configure a Pipeline.
type PipelineOptions struct {
	// Pods enriches targets whose __address__ host is a pod IP; nil turns
	// enrichment off.
	Pods PodLookup
	// TargetLabels names the plain labels added from the pod; nil means
	// DefaultTargetLabels, &TargetLabels{} adds none (the __meta_pod_*
	// labels are added either way).
	TargetLabels *TargetLabels
	// OwnershipKey is OwnershipKeyLabels ("" too) or OwnershipKeyAddress.
	OwnershipKey string
	// Parallelism is how many goroutines relabel at once; 0 is GOMAXPROCS.
	Parallelism int
}

// Pipeline turns a job's discovered target groups into the targets the
// coordinator assigns: enrichment, then the job's relabel_configs through
// Prometheus's scrape.PopulateLabels to drop targets and compute each kept
// target's id and ownership key. Results are cached per target group
// (by source and content, and the pods its targets map to): a group that
// is the same *targetgroup.Group as last time costs a map lookup, one with
// the same content a hash. Groups passed must not be modified afterwards
// (discovery.Manager hands a changed group as a new one, and the same
// pointer while it is unchanged). Safe for concurrent use.
type Pipeline struct {
	opts    PipelineOptions
	names   TargetLabels
	logger  *slog.Logger
	metrics *pipelineMetrics

	mu   sync.Mutex
	jobs map[string]*jobState

	// relabeled counts the targets run through relabeling, for tests.
	relabeled atomic.Int64
}

type jobState struct {
	mu     sync.Mutex
	cfg    *config.ScrapeConfig
	filter *metaFilter             // of cfg's relabel_configs
	cache  map[string]*groupResult // by group source

	// The last run's result, valid when ran: returned again when every
	// group is a cache hit and none is gone.
	ran      bool
	last     []Target
	lastErrs []error
}

type groupResult struct {
	// id is the group this was computed from or found equal to, weakly:
	// groups discovery replaced are not kept alive by the cache.
	id   weak.Pointer[targetgroup.Group]
	hash uint64 // groupHash

	podVersion uint64
	pods       []*Pod // the pod each target mapped to, nil for none
	kept       []Target
	errs       []error
	dropped    int
	enriched   int
}

// versioned is implemented by pod lookups that can say nothing changed.
type versioned interface{ Version() uint64 }

type pipelineMetrics struct {
	targets     *prometheus.GaugeVec
	errors      *prometheus.CounterVec
	groupsCache *prometheus.CounterVec
}

func newPipelineMetrics(reg prometheus.Registerer) (*pipelineMetrics, error) {
	m := &pipelineMetrics{
		targets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shardscrape_relabel_targets",
			Help: "Targets of a job at its last pipeline run, by state: discovered, kept, dropped (by relabeling), failed (relabeling error), duplicate (same id as a kept one), enriched (address at a pod IP).",
		}, []string{"job", "state"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardscrape_relabel_errors_total",
			Help: "Targets that failed relabeling (e.g. an invalid address after relabel_configs), per pipeline run.",
		}, []string{"job"}),
		groupsCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardscrape_relabel_group_cache_total",
			Help: "Target groups whose pipeline result was reused (hit) or computed (miss).",
		}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.targets, m.errors, m.groupsCache} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register pipeline metrics: %w", err)
			}
		}
	}
	return m, nil
}

// NewPipeline returns a pipeline with no jobs; ApplyConfig gives it some.
func NewPipeline(opts PipelineOptions, logger *slog.Logger, reg prometheus.Registerer) (*Pipeline, error) {
	switch opts.OwnershipKey {
	case "":
		opts.OwnershipKey = OwnershipKeyLabels
	case OwnershipKeyLabels, OwnershipKeyAddress:
	default:
		return nil, fmt.Errorf("ownership key %q: want %q or %q", opts.OwnershipKey, OwnershipKeyLabels, OwnershipKeyAddress)
	}
	names := DefaultTargetLabels
	if opts.TargetLabels != nil {
		names = *opts.TargetLabels
	}
	if err := names.validate(); err != nil {
		return nil, err
	}
	if opts.Parallelism <= 0 {
		opts.Parallelism = runtime.GOMAXPROCS(0)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newPipelineMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Pipeline{opts: opts, names: names, logger: logger.With("component", "relabel"), metrics: m, jobs: map[string]*jobState{}}, nil
}

// ApplyConfig takes the scrape configs of cfg (scrape_config_files
// included). Jobs whose config changed (compared as YAML) lose their
// cache; jobs gone are forgotten.
func (p *Pipeline) ApplyConfig(cfg *config.Config) error {
	scs, err := cfg.GetScrapeConfigs()
	if err != nil {
		return fmt.Errorf("relabel pipeline: scrape configs: %w", err)
	}
	p.ApplyScrapeConfigs(scs)
	return nil
}

// ApplyScrapeConfigs is ApplyConfig for scrape configs already resolved
// (cfg.GetScrapeConfigs reads scrape_config_files again on every call, so a
// caller holding them passes the same ones everywhere).
func (p *Pipeline) ApplyScrapeConfigs(scs []*config.ScrapeConfig) {
	p.mu.Lock()
	defer p.mu.Unlock()
	jobs := make(map[string]*jobState, len(scs))
	for _, sc := range scs {
		if old, ok := p.jobs[sc.JobName]; ok {
			old.mu.Lock()
			switch {
			case old.cfg == sc:
			case sameScrapeConfig(old.cfg, sc):
				// Reloaded unchanged: the cached results stand.
				old.cfg, old.filter = sc, newMetaFilter(sc.RelabelConfigs)
			default:
				old.cfg, old.filter, old.cache = sc, newMetaFilter(sc.RelabelConfigs), map[string]*groupResult{}
				old.ran, old.last, old.lastErrs = false, nil, nil
			}
			old.mu.Unlock()
			jobs[sc.JobName] = old
			continue
		}
		jobs[sc.JobName] = &jobState{cfg: sc, filter: newMetaFilter(sc.RelabelConfigs), cache: map[string]*groupResult{}}
	}
	for job := range p.jobs {
		if _, ok := jobs[job]; !ok {
			p.metrics.targets.DeletePartialMatch(prometheus.Labels{"job": job})
			p.metrics.errors.DeleteLabelValues(job)
		}
	}
	p.jobs = jobs
}

// sameScrapeConfig reports whether a and b are the same configuration as
// Prometheus writes them out (secrets are written as <secret>, and no
// secret changes what relabeling gives).
func sameScrapeConfig(a, b *config.ScrapeConfig) bool {
	ya, errA := yaml.Marshal(a)
	yb, errB := yaml.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ya, yb)
}

// ScrapeConfig returns the scrape config of job, or nil.
func (p *Pipeline) ScrapeConfig(job string) *config.ScrapeConfig {
	p.mu.Lock()
	defer p.mu.Unlock()
	if j, ok := p.jobs[job]; ok {
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.cfg
	}
	return nil
}

// ErrUnknownJob is returned by Targets for a job with no scrape config.
var ErrUnknownJob = errors.New("unknown job")

// Targets runs job's discovered groups (all of them: groups not passed are
// forgotten) through the pipeline and returns the kept targets, one per
// id, in group order, and the relabeling failures (targets that Prometheus
// would also refuse, as scrape.TargetsFromGroup reports them). The
// targets must not be modified: they may be the pipeline's cache.
func (p *Pipeline) Targets(job string, groups []*targetgroup.Group) ([]Target, []error) {
	ts, errs, _ := p.run(job, groups, true)
	return ts, errs
}

// Update is Targets that says whether the result can differ from the
// job's previous run (by any caller): when every group is the same as
// then (cache hits, the same pods) and none is gone, it returns nil, nil,
// false without merging anything. Otherwise changed is true and ts and
// errs are the result, not to be modified (as Targets'). A config change
// for the job (ApplyScrapeConfigs) makes its next run changed.
func (p *Pipeline) Update(job string, groups []*targetgroup.Group) (ts []Target, errs []error, changed bool) {
	return p.run(job, groups, false)
}

// run is Update, returning copies of the last result when unchanged and
// again is set.
func (p *Pipeline) run(job string, groups []*targetgroup.Group, again bool) ([]Target, []error, bool) {
	p.mu.Lock()
	j, ok := p.jobs[job]
	p.mu.Unlock()
	if !ok {
		return nil, []error{fmt.Errorf("job %q: %w", job, ErrUnknownJob)}, true
	}
	j.mu.Lock()
	defer j.mu.Unlock()

	var podVersion uint64
	vp, hasVersion := p.opts.Pods.(versioned)
	if hasVersion {
		podVersion = vp.Version()
	}

	// Cache keys: the source, and which occurrence of it this is (two SD
	// configs of a job may name groups alike, e.g. one Consul service in
	// two datacenters).
	keys := make([]string, len(groups))
	occurrences := map[string]int{}
	for i, tg := range groups {
		if tg == nil {
			continue
		}
		n := occurrences[tg.Source]
		occurrences[tg.Source] = n + 1
		keys[i] = tg.Source
		if n > 0 {
			keys[i] = tg.Source + "\xff" + strconv.Itoa(n)
		}
	}

	// Find the groups whose cached result is stale: the same group
	// (pointer) is unchanged, another one with the same content too.
	results := make([]*groupResult, len(groups))
	ids := make([]weak.Pointer[targetgroup.Group], len(groups))
	hashes := make([]uint64, len(groups))
	hashed := make([]bool, len(groups))
	var toHash, stale []int
	p.parallel(len(groups), func(_, i int) {
		tg := groups[i]
		if tg == nil {
			return
		}
		ids[i] = weak.Make(tg)
		r, ok := j.cache[keys[i]]
		if !ok {
			return // a new source: relabeled, hashed meanwhile
		}
		if r.id != ids[i] {
			return // another group of a known source: hashed first
		}
		hashes[i], hashed[i] = r.hash, true
		if p.podsUnchanged(r, tg, hasVersion, podVersion) {
			results[i] = r
		}
	})
	for i, tg := range groups {
		if tg != nil && !hashed[i] {
			if _, ok := j.cache[keys[i]]; ok {
				toHash = append(toHash, i)
			}
		}
	}
	// Hash those in chunks on every goroutine (a file_sd group of a
	// million targets read again).
	p.hashGroups(groups, toHash, hashes)
	p.parallel(len(toHash), func(_, k int) {
		i := toHash[k]
		hashed[i] = true
		if r := j.cache[keys[i]]; r.hash == hashes[i] && p.podsUnchanged(r, groups[i], hasVersion, podVersion) {
			results[i] = r
		}
	})
	nonNil := 0
	for i, tg := range groups {
		if tg == nil {
			continue
		}
		nonNil++
		if results[i] == nil {
			stale = append(stale, i)
		} else {
			results[i].id = ids[i]
		}
	}
	p.metrics.groupsCache.WithLabelValues("hit").Add(float64(nonNil - len(stale)))
	p.metrics.groupsCache.WithLabelValues("miss").Add(float64(len(stale)))

	// Every group a hit and none gone (the keys are distinct and all in the
	// cache, so equal counts mean the same set): the last result stands.
	if j.ran && len(stale) == 0 && nonNil == len(j.cache) {
		if len(j.lastErrs) > 0 {
			p.metrics.errors.WithLabelValues(job).Add(float64(len(j.lastErrs)))
		}
		if again {
			return slices.Clone(j.last), slices.Clone(j.lastErrs), false
		}
		return nil, nil, false
	}

	// Relabel the stale groups in chunks, in parallel (and hash those not
	// hashed yet).
	var chunks []chunk
	for _, gi := range stale {
		n := len(groups[gi].Targets)
		// kept is filled in place: each chunk appends within its own
		// range, then the ranges are moved together.
		results[gi] = &groupResult{id: ids[gi], hash: hashes[gi], podVersion: podVersion, kept: make([]Target, n)}
		if p.opts.Pods != nil {
			// Which pod each target mapped to, checked when the group comes
			// again after the pod index changed (8 MB at 1M targets).
			results[gi].pods = make([]*Pod, n)
		}
		p.relabeled.Add(int64(n))
		for lo := 0; lo < n; lo += chunkSize {
			chunks = append(chunks, chunk{gi, lo, min(lo+chunkSize, n)})
		}
	}
	parts := make([]groupResult, len(chunks))
	// Builders per goroutine: Kubernetes gives a group per pod, so most
	// chunks are one target.
	scratch := make([]*relabelScratch, p.opts.Parallelism)
	p.parallel(len(chunks), func(w, i int) {
		if scratch[w] == nil {
			scratch[w] = newRelabelScratch()
		}
		c := chunks[i]
		parts[i].kept = results[c.g].kept[c.lo:c.lo:c.hi]
		if !hashed[c.g] {
			parts[i].hash = chunkHash(groups[c.g], c.lo, c.hi)
		}
		p.relabel(job, j.cfg, j.filter, scratch[w], groups[c.g], c.lo, c.hi, results[c.g].pods, &parts[i])
	})
	filled := make(map[*groupResult]int, len(stale))
	for i, c := range chunks {
		r := results[c.g]
		k := filled[r]
		filled[r] = k + copy(r.kept[k:], parts[i].kept)
		r.errs = append(r.errs, parts[i].errs...)
		r.dropped += parts[i].dropped
		r.enriched += parts[i].enriched
	}
	for _, gi := range stale {
		if !hashed[gi] {
			results[gi].hash = groupHashStart(groups[gi])
		}
	}
	for i, c := range chunks {
		if !hashed[c.g] {
			results[c.g].hash = mix(results[c.g].hash, parts[i].hash)
		}
	}
	for r, k := range filled {
		r.kept = r.kept[:k]
		if k < cap(r.kept)/2 {
			r.kept = slices.Clone(r.kept) // mostly dropped: do not keep the room
		}
	}

	// Replace the cache with this run's groups, and merge.
	cache := make(map[string]*groupResult, len(groups))
	total, discovered, dropped, enriched := 0, 0, 0, 0
	var errs []error
	for i, tg := range groups {
		if tg == nil {
			continue
		}
		r := results[i]
		cache[keys[i]] = r
		total += len(r.kept)
		discovered += len(tg.Targets)
		dropped += r.dropped
		enriched += r.enriched
		errs = append(errs, r.errs...)
	}
	j.cache = cache

	out, dups := p.merge(results, total)

	m := p.metrics.targets
	m.WithLabelValues(job, "discovered").Set(float64(discovered))
	m.WithLabelValues(job, "kept").Set(float64(len(out)))
	m.WithLabelValues(job, "dropped").Set(float64(dropped))
	m.WithLabelValues(job, "failed").Set(float64(len(errs)))
	m.WithLabelValues(job, "duplicate").Set(float64(dups))
	m.WithLabelValues(job, "enriched").Set(float64(enriched))
	if len(errs) > 0 {
		p.metrics.errors.WithLabelValues(job).Add(float64(len(errs)))
	}
	j.ran, j.last, j.lastErrs = true, out, errs
	return out, errs, true
}

// merge concatenates the groups' kept targets and keeps one per id: of
// targets sharing an id, the one with the least labels (the same whatever
// the group order), at the first one's place. With a single group and no
// duplicate the result is that group's cached slice.
func (p *Pipeline) merge(results []*groupResult, total int) ([]Target, int) {
	var all []Target
	for _, r := range results {
		if r == nil {
			continue
		}
		if all == nil && len(r.kept) == total {
			all = r.kept // the only non-empty group: shared until a duplicate
			break
		}
		if all == nil {
			all = make([]Target, 0, total)
		}
		all = append(all, r.kept...)
	}
	// Find duplicates on every goroutine, each taking the ids of its
	// shard; dup[i] is the index of the first target with i's id.
	shards := min(p.opts.Parallelism, max(1, total/65536))
	found := make([][][2]int, shards)
	p.parallel(shards, func(_, s int) {
		seen := make(map[uint64]int, total/shards+1)
		for i := range all {
			id := all[i].ID
			if int(id%uint64(shards)) != s {
				continue
			}
			if k, ok := seen[id]; ok {
				found[s] = append(found[s], [2]int{k, i})
				continue
			}
			seen[id] = i
		}
	})
	var pairs [][2]int
	for _, f := range found {
		pairs = append(pairs, f...)
	}
	if len(pairs) == 0 {
		return all, 0
	}
	out := make([]Target, len(all))
	copy(out, all)
	drop := make(map[int]struct{}, len(pairs))
	for _, pr := range pairs {
		first, dup := pr[0], pr[1]
		drop[dup] = struct{}{}
		// Keep the same one whatever the group order.
		if labels.Compare(all[dup].Labels, out[first].Labels) < 0 {
			out[first] = all[dup]
		}
	}
	w := 0
	for i := range out {
		if _, ok := drop[i]; !ok {
			out[w] = out[i]
			w++
		}
	}
	return out[:w], len(pairs)
}

// podsUnchanged reports whether every target of a cached group still maps
// to the same pod.
func (p *Pipeline) podsUnchanged(r *groupResult, tg *targetgroup.Group, hasVersion bool, version uint64) bool {
	if p.opts.Pods == nil || (hasVersion && r.podVersion == version) {
		return true
	}
	for i, t := range tg.Targets {
		if p.lookup(t, tg.Labels) != r.pods[i] {
			return false
		}
	}
	if hasVersion {
		// Checked at this version: the next update at the same version
		// need not look every target up again. (Each result is one
		// group's, so parallel callers write different results.)
		r.podVersion = version
	}
	return true
}

// parallel calls f(w, 0..n-1) on up to Parallelism goroutines, w being
// the goroutine's number (below Parallelism).
func (p *Pipeline) parallel(n int, f func(w, i int)) {
	workers := min(p.opts.Parallelism, n)
	if workers <= 1 {
		for i := range n {
			f(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(w, i)
			}
		})
	}
	wg.Wait()
}

// relabelScratch is one goroutine's reused builders and pruned label sets.
type relabelScratch struct {
	lb   *labels.Builder
	db   labels.ScratchBuilder
	t, g model.LabelSet
}

func newRelabelScratch() *relabelScratch {
	return &relabelScratch{lb: labels.NewBuilder(labels.EmptyLabels()), db: labels.NewScratchBuilder(32)}
}

func (p *Pipeline) lookup(tLabels, tgLabels model.LabelSet) *Pod {
	if p.opts.Pods == nil {
		return nil
	}
	addr, ok := tLabels[model.AddressLabel]
	if !ok {
		addr = tgLabels[model.AddressLabel]
	}
	if addr == "" {
		return nil
	}
	return p.opts.Pods.Lookup(addressHost(string(addr)))
}

// addressHost returns the host of a host:port (or bare host) address.
func addressHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
}

// relabel runs targets lo..hi of tg through enrichment and relabeling into
// out, recording the pod each mapped to in pods. Relabeling sees the labels
// filter leaves.
func (p *Pipeline) relabel(job string, cfg *config.ScrapeConfig, filter *metaFilter, sc *relabelScratch, tg *targetgroup.Group, lo, hi int, pods []*Pod, out *groupResult) {
	lb, db := sc.lb, &sc.db
	gLabels := filter.prune(tg.Labels, &sc.g)
	for i := lo; i < hi; i++ {
		tLabels := tg.Targets[i]
		if pod := p.lookup(tLabels, tg.Labels); pod != nil {
			pods[i] = pod
			tLabels = Enrich(tLabels, tg.Labels, pod, p.names)
			out.enriched++
		}
		lset, err := scrape.PopulateLabels(lb, cfg, filter.prune(tLabels, &sc.t), gLabels)
		if err != nil {
			// As scrape.TargetsFromGroup words it.
			out.errs = append(out.errs, fmt.Errorf("instance %d in group %s: %w", i, tg, err))
			continue
		}
		if lset.IsEmpty() {
			out.dropped++
			continue
		}
		st := scrape.NewTarget(lset, cfg, tLabels, tg.Labels)
		t := Target{ID: targetid.Of(job, st), Job: job, Labels: discoveredLabels(db, tLabels, tg.Labels)}
		t.Address = t.Labels.Get(model.AddressLabel)
		if p.opts.OwnershipKey == OwnershipKeyAddress {
			t.Key = xxhash.Sum64String(t.Address)
		} else {
			t.Key = t.ID
		}
		out.kept = append(out.kept, t)
	}
}

// discoveredLabels merges target and group labels (the target's win), as
// Prometheus does before relabeling, without the scrape config defaults.
func discoveredLabels(b *labels.ScratchBuilder, tLabels, tgLabels model.LabelSet) labels.Labels {
	b.Reset()
	for n, v := range tLabels {
		b.Add(string(n), string(v))
	}
	for n, v := range tgLabels {
		if _, ok := tLabels[n]; !ok {
			b.Add(string(n), string(v))
		}
	}
	b.Sort()
	return b.Labels()
}

// Enrich returns tLabels with pod's labels added: its __meta_pod_* labels
// and the plain target labels names has. A label the target already has
// (in tLabels or its group's tgLabels) is never overwritten. tLabels is not
// modified.
func Enrich(tLabels, tgLabels model.LabelSet, pod *Pod, names TargetLabels) model.LabelSet {
	out := make(model.LabelSet, len(tLabels)+len(pod.meta)+4)
	for n, v := range tLabels {
		out[n] = v
	}
	add := func(n model.LabelName, v model.LabelValue) {
		if n == "" {
			return
		}
		if _, ok := out[n]; ok {
			return
		}
		if _, ok := tgLabels[n]; ok {
			return
		}
		out[n] = v
	}
	for n, v := range pod.meta {
		add(n, v)
	}
	add(model.LabelName(names.Pod), model.LabelValue(pod.Name))
	add(model.LabelName(names.Namespace), model.LabelValue(pod.Namespace))
	add(model.LabelName(names.Node), model.LabelValue(pod.Node))
	add(model.LabelName(names.PodIP), model.LabelValue(pod.IP))
	return out
}

// chunk is targets lo..hi of group g: the unit of parallel work.
type chunk struct{ g, lo, hi int }

const chunkSize = 2048

// hashGroups sets hashes[i] to groupHash(groups[i]) for each i in idx,
// on every goroutine.
func (p *Pipeline) hashGroups(groups []*targetgroup.Group, idx []int, hashes []uint64) {
	var chunks []chunk
	for _, gi := range idx {
		for lo := 0; lo < len(groups[gi].Targets); lo += chunkSize {
			chunks = append(chunks, chunk{gi, lo, min(lo+chunkSize, len(groups[gi].Targets))})
		}
	}
	parts := make([]uint64, len(chunks))
	p.parallel(len(chunks), func(_, i int) {
		c := chunks[i]
		parts[i] = chunkHash(groups[c.g], c.lo, c.hi)
	})
	for _, gi := range idx {
		hashes[gi] = groupHashStart(groups[gi])
	}
	for i, c := range chunks {
		hashes[c.g] = mix(hashes[c.g], parts[i])
	}
}

// groupHash hashes a group's labels and targets, independent of map order:
// groupHashStart mixed with the chunkHash of each chunk in order.
func groupHash(tg *targetgroup.Group) uint64 {
	h := groupHashStart(tg)
	for lo := 0; lo < len(tg.Targets); lo += chunkSize {
		h = mix(h, chunkHash(tg, lo, min(lo+chunkSize, len(tg.Targets))))
	}
	return h
}

func groupHashStart(tg *targetgroup.Group) uint64 {
	return mix(mix(xxhash.Sum64String(tg.Source), setHash(tg.Labels)), uint64(len(tg.Targets)))
}

func chunkHash(tg *targetgroup.Group, lo, hi int) uint64 {
	var h uint64
	for _, t := range tg.Targets[lo:hi] {
		h = mix(h, setHash(t))
	}
	return h
}

func setHash(ls model.LabelSet) uint64 {
	var s uint64
	for n, v := range ls {
		s += xxhash.Sum64String(string(n)) ^ (xxhash.Sum64String(string(v)) * 0x9e3779b97f4a7c15)
	}
	return s
}

func mix(h, x uint64) uint64 {
	return (bits.RotateLeft64(h, 27) ^ x) * 0xff51afd7ed558ccd
}
