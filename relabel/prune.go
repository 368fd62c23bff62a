package relabel

import (
	"maps"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
)

// metaFilter leaves out of a target's labels the __meta_* labels its
// job's relabel_configs cannot read, before Prometheus's PopulateLabels
// relabels them. PopulateLabels deletes every __meta_* label after
// relabeling, so one that no rule reads cannot change its result: the
// rules read labels by name (source_labels, and target_label for
// keepequal and dropequal) and labelmap by matching its regex against
// every name; labeldrop and labelkeep only delete. Kubernetes pod
// discovery gives a target two dozen __meta_* labels, of which a job
// usually reads a few, and relabeling's cost grows with the label count
// (each deletion of a meta label is linear in it). A job with an action
// this does not know prunes nothing. What the workers receive (the
// discovered labels) is never pruned.
type metaFilter struct {
	on   bool
	need map[model.LabelName]struct{}
	maps []relabel.Regexp // labelmap regexes
	// matched caches, for labelmap jobs, whether a name matches one of
	// maps: a copy-on-write map (names are few and repeat across targets),
	// up to maxCachedNames names, then computed each time.
	matched atomic.Pointer[map[model.LabelName]bool]
	mu      sync.Mutex // serializes writers of matched
}

const maxCachedNames = 4096

func newMetaFilter(rcs []*relabel.Config) *metaFilter {
	f := &metaFilter{on: true, need: map[model.LabelName]struct{}{}}
	for _, rc := range rcs {
		if rc == nil {
			f.on = false
			continue
		}
		switch rc.Action {
		case relabel.Replace, relabel.Keep, relabel.Drop, relabel.KeepEqual, relabel.DropEqual,
			relabel.HashMod, relabel.Lowercase, relabel.Uppercase, relabel.LabelDrop, relabel.LabelKeep:
		case relabel.LabelMap:
			f.maps = append(f.maps, rc.Regex)
		default:
			f.on = false
		}
		for _, n := range rc.SourceLabels {
			f.need[n] = struct{}{}
		}
		f.need[model.LabelName(rc.TargetLabel)] = struct{}{}
	}
	f.matched.Store(&map[model.LabelName]bool{})
	return f
}

// keeps reports whether label n must stay.
func (f *metaFilter) keeps(n model.LabelName) bool {
	if !strings.HasPrefix(string(n), model.MetaLabelPrefix) {
		return true
	}
	if _, ok := f.need[n]; ok {
		return true
	}
	if len(f.maps) == 0 {
		return false
	}
	cache := *f.matched.Load()
	if v, ok := cache[n]; ok {
		return v
	}
	match := false
	for _, re := range f.maps {
		if re.MatchString(string(n)) {
			match = true
			break
		}
	}
	if len(cache) < maxCachedNames {
		f.mu.Lock()
		cur := *f.matched.Load()
		if _, ok := cur[n]; !ok && len(cur) < maxCachedNames {
			next := make(map[model.LabelName]bool, len(cur)+1)
			maps.Copy(next, cur)
			next[n] = match
			f.matched.Store(&next)
		}
		f.mu.Unlock()
	}
	return match
}

// prune returns ls without the labels that need not stay, copied into
// *scratch (made or cleared), or ls itself when all stay.
func (f *metaFilter) prune(ls model.LabelSet, scratch *model.LabelSet) model.LabelSet {
	if !f.on {
		return ls
	}
	// One pass (a map's order differs between passes): the kept labels
	// into a small array, then into scratch if any was left out.
	type kv struct {
		n model.LabelName
		v model.LabelValue
	}
	var arr [16]kv
	kept := arr[:0]
	for n, v := range ls {
		if f.keeps(n) {
			kept = append(kept, kv{n, v})
		}
	}
	if len(kept) == len(ls) {
		return ls
	}
	if *scratch == nil {
		*scratch = make(model.LabelSet, len(kept))
	} else {
		clear(*scratch)
	}
	out := *scratch
	for _, l := range kept {
		out[l.n] = l.v
	}
	return out
}
