// Package kubeapi is an in-process fake of the Kubernetes API server subset
// that client-go informers, and so Prometheus's kubernetes_sd_configs, use:
// list and watch of pods, nodes, services, endpoints, namespaces,
// endpointslices (discovery.k8s.io/v1), ingresses (networking.k8s.io/v1),
// replicasets (apps/v1) and jobs (batch/v1), cluster-wide or in one
// namespace, plus GET of one object and the /version, /api, /apis discovery
// documents.
//
// It speaks JSON the way the apiserver does: lists carry kind, apiVersion
// and metadata.resourceVersion with items without type meta; watches
// (?watch=true) stream one {"type","object"} JSON document per line,
// chunked, objects with kind and apiVersion. Resource versions are one
// global counter, as etcd's. It honours labelSelector, fieldSelector (the
// fields the apiserver supports for each type; others answer 400),
// resourceVersion (a watch resumes after it; one older than the retained
// history gets a 410 Expired ERROR event, as from the watch cache),
// timeoutSeconds, allowWatchBookmarks (periodic BOOKMARK events) and
// sendInitialEvents=true (the watch-list streaming the client-go reflector
// uses by default: ADDED events for the current state, then a BOOKMARK
// annotated k8s.io/initial-events-end). An object leaving a watch's
// selector is sent as DELETED, one entering it as ADDED, as the watch cache
// does. limit and continue are ignored: every list is one page, as the
// apiserver serves resourceVersion=0 lists from its cache.
//
// State is mutable and safe for concurrent use: Apply creates or replaces
// objects, Delete removes them; both take typed k8s.io/api objects.
package kubeapi

import (
	"bufio"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

// ErrUnsupportedType is returned by Apply and Delete for an object type the
// fake does not serve.
var ErrUnsupportedType = errors.New("unsupported object type")

// Options configure a Server.
type Options struct {
	// EventHistory is how many events each resource type retains for
	// watches resuming from an older resource version; 0 means 10,000.
	EventHistory int
	// BookmarkInterval is how often a watch that allows bookmarks gets
	// one; 0 means one minute, as the apiserver.
	BookmarkInterval time.Duration
	// Logger logs requests at debug level; nil discards.
	Logger *slog.Logger
}

// Server is a fake Kubernetes API server. Use New.
type Server struct {
	opts   Options
	logger *slog.Logger
	byType map[reflect.Type]*store
	byPath map[string]*store // group/version/resource

	mu       sync.Mutex
	rv       uint64
	requests map[string]uint64
}

type entry struct {
	res     *resource
	uid     types.UID
	created metav1.Time
	ns      string
	name    string
	rv      uint64
	json    []byte // obj as JSON, without type meta
	labels  labels.Set
	fields  fields.Set
	deleted bool
}

type event struct {
	typ       watch.EventType
	cur, prev *entry
	rv        uint64
}

type store struct {
	res       *resource
	objs      map[string]*entry // namespace/name
	log       []event
	compacted uint64 // events with rv <= compacted are gone
	wake      chan struct{}
}

// New returns an empty API server.
func New(opts Options) *Server {
	if opts.EventHistory <= 0 {
		opts.EventHistory = 10_000
	}
	if opts.BookmarkInterval <= 0 {
		opts.BookmarkInterval = time.Minute
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, logger: logger, byType: map[reflect.Type]*store{}, byPath: map[string]*store{}, rv: 1, requests: map[string]uint64{}}
	for _, r := range resources {
		st := &store{res: r, objs: map[string]*entry{}, wake: make(chan struct{})}
		s.byType[r.goType] = st
		s.byPath[r.apiVersion()+"/"+r.name] = st
	}
	return s
}

// Requests returns how many list and watch requests each resource got,
// keyed "list pods", "watch pods" (resuming or starting at a version) or
// "watchlist pods" (sendInitialEvents).
func (s *Server) Requests() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.requests)
}

func (s *Server) count(key string) {
	s.mu.Lock()
	s.requests[key]++
	s.mu.Unlock()
}

// ResourceVersion returns the current (latest) resource version.
func (s *Server) ResourceVersion() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rv
}

func (s *Server) storeOf(obj runtime.Object) (*store, metav1.Object, error) {
	t := reflect.TypeOf(obj)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	st, ok := s.byType[t]
	if !ok {
		return nil, nil, fmt.Errorf("%T: %w", obj, ErrUnsupportedType)
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, nil, fmt.Errorf("%T has no object meta: %w", obj, ErrUnsupportedType)
	}
	if m.GetName() == "" {
		return nil, nil, fmt.Errorf("%s with empty name", st.res.kind)
	}
	if st.res.namespaced && m.GetNamespace() == "" {
		return nil, nil, fmt.Errorf("%s %q: empty namespace", st.res.kind, m.GetName())
	}
	return st, m, nil
}

// Apply creates each object or replaces the stored one of the same type,
// namespace and name, and notifies watches. The server keeps deep copies
// with resourceVersion set (and uid and creationTimestamp when empty); the
// caller's objects are not modified.
func (s *Server) Apply(objs ...runtime.Object) error {
	// Encode outside the lock; resource versions are patched in below.
	type prepared struct {
		st  *store
		key string
		e   *entry
		obj runtime.Object
	}
	ps := make([]prepared, 0, len(objs))
	now := metav1.Now()
	for _, o := range objs {
		st, _, err := s.storeOf(o)
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		c := o.DeepCopyObject()
		c.GetObjectKind().SetGroupVersionKind(emptyGVK)
		m := c.(metav1.Object)
		if !st.res.namespaced {
			m.SetNamespace("")
		}
		e := &entry{res: st.res, ns: m.GetNamespace(), name: m.GetName(), labels: labels.Set(m.GetLabels()), fields: objectFields(st.res, c, m)}
		ps = append(ps, prepared{st: st, key: e.ns + "/" + e.name, e: e, obj: c})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	touched := map[*store]bool{}
	for _, p := range ps {
		s.rv++
		p.e.rv = s.rv
		prev := p.st.objs[p.key]
		m := p.obj.(metav1.Object)
		m.SetResourceVersion(strconv.FormatUint(s.rv, 10))
		// Like the apiserver, keep uid and creationTimestamp across updates.
		if m.GetUID() == "" {
			if prev != nil {
				m.SetUID(prev.uid)
			} else {
				m.SetUID(uid(p.st.res.kind + "/" + p.key + "/" + strconv.FormatUint(s.rv, 10)))
			}
		}
		if ts := m.GetCreationTimestamp(); ts.IsZero() {
			if prev != nil {
				m.SetCreationTimestamp(prev.created)
			} else {
				m.SetCreationTimestamp(now)
			}
		}
		p.e.uid, p.e.created = m.GetUID(), m.GetCreationTimestamp()
		b, err := json.Marshal(p.obj)
		if err != nil {
			return fmt.Errorf("apply %s %s: encode: %w", p.st.res.kind, p.key, err)
		}
		p.e.json = b
		typ := watch.Added
		if prev != nil {
			typ = watch.Modified
		}
		p.st.objs[p.key] = p.e
		s.record(p.st, event{typ: typ, cur: p.e, prev: prev, rv: s.rv})
		touched[p.st] = true
	}
	for st := range touched {
		close(st.wake)
		st.wake = make(chan struct{})
	}
	return nil
}

// Delete removes each object (by type, namespace and name) and notifies
// watches; objects not stored are skipped.
func (s *Server) Delete(objs ...runtime.Object) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	touched := map[*store]bool{}
	for _, o := range objs {
		st, m, err := s.storeOf(o)
		if err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		ns := m.GetNamespace()
		if !st.res.namespaced {
			ns = ""
		}
		key := ns + "/" + m.GetName()
		prev, ok := st.objs[key]
		if !ok {
			continue
		}
		delete(st.objs, key)
		s.rv++
		gone, err := withRV(prev, s.rv)
		if err != nil {
			return fmt.Errorf("delete %s %s: %w", st.res.kind, key, err)
		}
		gone.deleted = true
		s.record(st, event{typ: watch.Deleted, cur: gone, prev: prev, rv: s.rv})
		touched[st] = true
	}
	for st := range touched {
		close(st.wake)
		st.wake = make(chan struct{})
	}
	return nil
}

// Get returns a copy of the stored object of obj's type, namespace and
// name, or nil.
func (s *Server) Get(obj runtime.Object) (runtime.Object, error) {
	st, m, err := s.storeOf(obj)
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := st.objs[m.GetNamespace()+"/"+m.GetName()]
	if !ok {
		return nil, nil
	}
	return e.decode()
}

// Len returns how many objects of obj's type are stored.
func (s *Server) Len(obj runtime.Object) int {
	t := reflect.TypeOf(obj)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	st, ok := s.byType[t]
	if !ok {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(st.objs)
}

// record appends an event, compacting the log when it is full; s.mu held.
func (s *Server) record(st *store, ev event) {
	if len(st.log) >= s.opts.EventHistory {
		drop := len(st.log) - s.opts.EventHistory/2
		st.compacted = st.log[drop-1].rv
		st.log = slices.Clone(st.log[drop:])
	}
	st.log = append(st.log, ev)
}

var emptyGVK schema.GroupVersionKind

func objectFields(r *resource, o runtime.Object, m metav1.Object) fields.Set {
	f := fields.Set{"metadata.name": m.GetName()}
	if r.namespaced {
		f["metadata.namespace"] = m.GetNamespace()
	}
	if r.fields != nil {
		for k, v := range r.fields(o) {
			f[k] = v
		}
	}
	return f
}

// decode returns the stored object, typed. Entries keep only JSON: a
// 150,000-pod fleet would hold gigabytes of typed objects besides.
func (e *entry) decode() (runtime.Object, error) {
	o := reflect.New(e.res.goType).Interface().(runtime.Object)
	if err := json.Unmarshal(e.json, o); err != nil {
		return nil, fmt.Errorf("decode %s %s/%s: %w", e.res.kind, e.ns, e.name, err)
	}
	return o, nil
}

// withRV returns a copy of e at resource version rv.
func withRV(e *entry, rv uint64) (*entry, error) {
	c, err := e.decode()
	if err != nil {
		return nil, err
	}
	c.(metav1.Object).SetResourceVersion(strconv.FormatUint(rv, 10))
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	n := *e
	n.rv, n.json = rv, b
	return &n, nil
}

// withKind returns an object's JSON with kind and apiVersion first.
func withKind(r *resource, b []byte) []byte {
	out := make([]byte, 0, len(b)+64)
	out = append(out, `{"kind":"`...)
	out = append(out, r.kind...)
	out = append(out, `","apiVersion":"`...)
	out = append(out, r.apiVersion()...)
	out = append(out, '"')
	if len(b) > 2 {
		out = append(out, ',')
	}
	return append(out, b[1:]...)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.logger.Debug("Request", "method", r.Method, "url", r.URL.String())
	if r.Method != http.MethodGet {
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "the fake API server is read-only over HTTP")
		return
	}
	p := strings.Trim(r.URL.Path, "/")
	switch p {
	case "version":
		writeJSON(w, map[string]string{
			"major": "1", "minor": "34", "gitVersion": "v1.34.0-fake", "gitCommit": "fake",
			"gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.26", "compiler": "gc", "platform": "linux/amd64",
		})
		return
	case "healthz", "readyz", "livez":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
		return
	case "api":
		writeJSON(w, metav1.APIVersions{
			TypeMeta:                   metav1.TypeMeta{Kind: "APIVersions"},
			Versions:                   []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}},
		})
		return
	case "apis":
		writeJSON(w, s.groupList())
		return
	}
	seg := strings.Split(p, "/")
	var gv string
	switch {
	case len(seg) >= 2 && seg[0] == "api":
		gv, seg = seg[1], seg[2:]
	case len(seg) >= 3 && seg[0] == "apis":
		gv, seg = seg[1]+"/"+seg[2], seg[3:]
	default:
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
		return
	}
	if len(seg) == 0 {
		s.serveResourceList(w, gv)
		return
	}
	var ns, res, name string
	switch {
	case len(seg) >= 3 && seg[0] == "namespaces":
		ns, res = seg[1], seg[2]
		if len(seg) >= 4 {
			name = seg[3]
		}
		if len(seg) > 4 {
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "subresources are not served by the fake")
			return
		}
	case len(seg) <= 2:
		res = seg[0]
		if len(seg) == 2 {
			name = seg[1]
		}
	default:
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
		return
	}
	st, ok := s.byPath[gv+"/"+res]
	if !ok || (ns != "" && !st.res.namespaced) {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
		return
	}
	if name != "" {
		s.serveGet(w, st, ns, name)
		return
	}
	q := r.URL.Query()
	sel, err := parseSelectors(st.res, q.Get("labelSelector"), q.Get("fieldSelector"))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	sel.ns = ns
	if b, _ := strconv.ParseBool(q.Get("watch")); b {
		verb := "watch"
		if b, _ := strconv.ParseBool(q.Get("sendInitialEvents")); b {
			verb = "watchlist"
		}
		s.count(verb + " " + st.res.name)
		s.serveWatch(w, r, st, sel)
		return
	}
	s.count("list " + st.res.name)
	s.serveList(w, st, sel)
}

type selector struct {
	ns     string
	labels labels.Selector
	fields fields.Selector
}

func (sel *selector) matches(e *entry) bool {
	return e != nil && (sel.ns == "" || e.ns == sel.ns) && sel.labels.Matches(e.labels) && sel.fields.Matches(e.fields)
}

func parseSelectors(r *resource, ls, fs string) (*selector, error) {
	l, err := labels.Parse(ls)
	if err != nil {
		return nil, fmt.Errorf("unable to parse requirement: %w", err)
	}
	f, err := fields.ParseSelector(fs)
	if err != nil {
		return nil, fmt.Errorf("invalid field selector %q: %w", fs, err)
	}
	// The apiserver rejects fields a type does not support.
	var probe fields.Set
	if r.fields != nil {
		probe = r.fields(reflect.New(r.goType).Interface().(runtime.Object))
	}
	for _, req := range f.Requirements() {
		switch req.Field {
		case "metadata.name":
			continue
		case "metadata.namespace":
			if r.namespaced {
				continue
			}
		}
		if _, ok := probe[req.Field]; !ok {
			return nil, fmt.Errorf("field label not supported: %s", req.Field)
		}
	}
	return &selector{labels: l, fields: f}, nil
}

func (s *Server) serveGet(w http.ResponseWriter, st *store, ns, name string) {
	s.mu.Lock()
	e, ok := st.objs[ns+"/"+name]
	s.mu.Unlock()
	if !ok {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("%s %q not found", st.res.name, name))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(withKind(st.res, e.json))
}

func (s *Server) serveList(w http.ResponseWriter, st *store, sel *selector) {
	s.mu.Lock()
	rv := s.rv
	items := make([]*entry, 0, len(st.objs))
	for _, e := range st.objs {
		if sel.matches(e) {
			items = append(items, e)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(items, func(a, b *entry) int {
		if a.ns != b.ns {
			return strings.Compare(a.ns, b.ns)
		}
		return strings.Compare(a.name, b.name)
	})
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 64<<10)
	fmt.Fprintf(bw, `{"kind":"%sList","apiVersion":"%s","metadata":{"resourceVersion":"%d"},"items":[`, st.res.kind, st.res.apiVersion(), rv)
	for i, e := range items {
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		_, _ = bw.Write(e.json)
	}
	_, _ = bw.WriteString("]}\n")
	_ = bw.Flush()
}

// serveWatch streams watch events until the client goes away, the
// requested timeout passes or the server closes.
func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request, st *store, sel *selector) {
	q := r.URL.Query()
	bookmarks, _ := strconv.ParseBool(q.Get("allowWatchBookmarks"))
	initial, _ := strconv.ParseBool(q.Get("sendInitialEvents"))
	rvParam := q.Get("resourceVersion")
	if q.Has("sendInitialEvents") && q.Get("resourceVersionMatch") != string(metav1.ResourceVersionMatchNotOlderThan) {
		writeStatus(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, "sendInitialEvents is forbidden unless resourceVersionMatch is NotOlderThan")
		return
	}
	var from uint64
	if rvParam != "" && rvParam != "0" {
		v, err := strconv.ParseUint(rvParam, 10, 64)
		if err != nil {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("invalid resource version %q", rvParam))
			return
		}
		from = v
	}
	// Without a resource version, or with 0, the watch starts with the
	// current state as ADDED events (the apiserver's "Get State and Start
	// at Most Recent" and "Start at Any").
	if from == 0 && !q.Has("sendInitialEvents") {
		initial = true
	}
	ctx := r.Context()
	if ts := q.Get("timeoutSeconds"); ts != "" {
		n, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || n < 0 {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("invalid timeoutSeconds %q", ts))
			return
		}
		if n > 0 {
			var cancel func()
			ctx, cancel = context.WithTimeout(ctx, time.Duration(n)*time.Second)
			defer cancel()
		}
	}
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	flush := func() bool {
		if bw.Flush() != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}

	s.mu.Lock()
	pos := from
	var snapshot []*entry
	if initial {
		pos = s.rv
		for _, e := range st.objs {
			if sel.matches(e) {
				snapshot = append(snapshot, e)
			}
		}
	} else if from == 0 {
		pos = s.rv
	} else if from < st.compacted {
		s.mu.Unlock()
		writeEvent(bw, watch.Error, statusJSON(http.StatusGone, metav1.StatusReasonExpired, fmt.Sprintf("too old resource version: %d (%d)", from, st.compacted+1)))
		flush()
		return
	}
	s.mu.Unlock()

	if initial {
		slices.SortFunc(snapshot, func(a, b *entry) int { return cmp.Compare(a.rv, b.rv) })
		for _, e := range snapshot {
			writeEvent(bw, watch.Added, withKind(st.res, e.json))
		}
		if q.Has("sendInitialEvents") && bookmarks {
			writeEvent(bw, watch.Bookmark, bookmarkJSON(st.res, pos, true))
		}
	}
	if !flush() {
		return
	}

	tick := time.NewTicker(s.opts.BookmarkInterval)
	defer tick.Stop()
	for {
		s.mu.Lock()
		i, _ := slices.BinarySearchFunc(st.log, pos+1, func(ev event, rv uint64) int {
			switch {
			case ev.rv < rv:
				return -1
			case ev.rv > rv:
				return 1
			}
			return 0
		})
		if pos < st.compacted {
			s.mu.Unlock()
			writeEvent(bw, watch.Error, statusJSON(http.StatusGone, metav1.StatusReasonExpired, fmt.Sprintf("too old resource version: %d (%d)", pos, st.compacted+1)))
			flush()
			return
		}
		evs := slices.Clone(st.log[i:])
		wake := st.wake
		if len(evs) > 0 {
			pos = evs[len(evs)-1].rv
		}
		s.mu.Unlock()

		for _, ev := range evs {
			if err := s.writeFiltered(bw, st.res, sel, ev); err != nil {
				s.logger.Error("Encode watch event", "resource", st.res.name, "err", err)
				return
			}
		}
		if len(evs) > 0 && !flush() {
			return
		}
		select {
		case <-wake:
		case <-tick.C:
			if bookmarks {
				s.mu.Lock()
				// Every event of this type up to now has been sent.
				if n := len(st.log); n == 0 || st.log[n-1].rv <= pos {
					pos = s.rv
				}
				s.mu.Unlock()
				writeEvent(bw, watch.Bookmark, bookmarkJSON(st.res, pos, false))
				if !flush() {
					return
				}
			}
		case <-ctx.Done():
			return
		}
	}
}

// writeFiltered writes ev as this watch sees it through its selector.
func (s *Server) writeFiltered(bw *bufio.Writer, r *resource, sel *selector, ev event) error {
	curOK := !ev.cur.deleted && sel.matches(ev.cur)
	prevOK := sel.matches(ev.prev)
	switch {
	case ev.typ == watch.Deleted:
		if prevOK {
			writeEvent(bw, watch.Deleted, withKind(r, ev.cur.json))
		}
	case curOK && prevOK:
		writeEvent(bw, watch.Modified, withKind(r, ev.cur.json))
	case curOK:
		writeEvent(bw, watch.Added, withKind(r, ev.cur.json))
	case prevOK:
		// Left the selector: DELETED with the previous content at the
		// event's resource version.
		gone, err := withRV(ev.prev, ev.rv)
		if err != nil {
			return err
		}
		writeEvent(bw, watch.Deleted, withKind(r, gone.json))
	}
	return nil
}

func writeEvent(bw *bufio.Writer, typ watch.EventType, obj []byte) {
	_, _ = bw.WriteString(`{"type":"`)
	_, _ = bw.WriteString(string(typ))
	_, _ = bw.WriteString(`","object":`)
	_, _ = bw.Write(obj)
	_, _ = bw.WriteString("}\n")
}

func bookmarkJSON(r *resource, rv uint64, initialEnd bool) []byte {
	ann := ""
	if initialEnd {
		ann = `,"annotations":{"` + metav1.InitialEventsAnnotationKey + `":"true"}`
	}
	return fmt.Appendf(nil, `{"kind":"%s","apiVersion":"%s","metadata":{"resourceVersion":"%d","creationTimestamp":null%s}}`, r.kind, r.apiVersion(), rv, ann)
}

func statusJSON(code int, reason metav1.StatusReason, msg string) []byte {
	b, _ := json.Marshal(metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  msg,
		Reason:   reason,
		Code:     int32(code),
	})
	return b
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(statusJSON(code, reason, msg))
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (s *Server) groupList() metav1.APIGroupList {
	l := metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
	seen := map[string]bool{}
	for _, r := range resources {
		if r.group == "" || seen[r.group] {
			continue
		}
		seen[r.group] = true
		gv := metav1.GroupVersionForDiscovery{GroupVersion: r.apiVersion(), Version: r.version}
		l.Groups = append(l.Groups, metav1.APIGroup{Name: r.group, Versions: []metav1.GroupVersionForDiscovery{gv}, PreferredVersion: gv})
	}
	return l
}

func (s *Server) serveResourceList(w http.ResponseWriter, gv string) {
	l := metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv}
	for _, r := range resources {
		if r.apiVersion() == gv {
			l.APIResources = append(l.APIResources, metav1.APIResource{
				Name: r.name, Namespaced: r.namespaced, Kind: r.kind,
				Verbs: metav1.Verbs{"get", "list", "watch"},
			})
		}
	}
	if len(l.APIResources) == 0 {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
		return
	}
	writeJSON(w, l)
}

// uid derives a stable UUID-shaped uid from an object's identity.
func uid(key string) types.UID {
	h := fnv.New128a()
	_, _ = h.Write([]byte(key))
	s := hex.EncodeToString(h.Sum(nil))
	return types.UID(s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32])
}
