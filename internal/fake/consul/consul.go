// Package consul is an in-process fake of the Consul HTTP API subset that
// Prometheus's consul_sd_configs (github.com/hashicorp/consul/api) calls:
//
//	GET /v1/agent/self                   the local datacenter
//	GET /v1/catalog/services             service name → tags
//	GET /v1/catalog/service/<name>       catalog entries of a service
//	GET /v1/health/service/<name>        instances with node and checks
//	GET /v1/catalog/nodes, /v1/status/leader
//
// Every catalog and health read is a blocking query as Consul's: with
// ?index=N it waits (up to ?wait=, default 5m, at most 10m) until the
// result's index exceeds N, and every response carries X-Consul-Index,
// X-Consul-LastContact and X-Consul-KnownLeader. The filters Prometheus
// sends are honoured: tag (all must match), node-meta (key:value, all must
// match), passing, dc. Filter expressions (?filter=) are not supported and
// answer 400.
//
// The catalog is mutable and safe for concurrent use: SetNode, RemoveNode,
// SetService, RemoveService, SetServiceHealth, SetNodeHealth. Each mutation
// takes the next Raft-like index; a service's index is the index of the last
// mutation that touched one of its instances (their node included), so a
// change wakes only the queries it affects.
package consul

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// Health statuses, as Consul spells them.
const (
	Passing  = consulapi.HealthPassing
	Warning  = consulapi.HealthWarning
	Critical = consulapi.HealthCritical
)

const (
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
)

// ErrUnknownNode is returned when a service names a node not in the catalog.
var ErrUnknownNode = errors.New("unknown node")

// ErrUnknownService is returned when a service instance is not in the catalog.
var ErrUnknownService = errors.New("unknown service instance")

// Node is a catalog node.
type Node struct {
	// Name is the node name (Consul's Node).
	Name string
	// Address is the node address; a service without its own address is
	// reached there.
	Address         string
	Meta            map[string]string
	TaggedAddresses map[string]string
	// Health is the status of the node's serfHealth check; "" is passing.
	Health string
}

// Service is one service instance registered on a node.
type Service struct {
	// Node is the name of the node it is registered on.
	Node string
	// ID is the instance id, unique on its node; "" means Name.
	ID string
	// Name is the service name.
	Name string
	// Address is the service address; "" means the node's.
	Address   string
	Port      int
	Tags      []string
	Meta      map[string]string
	Namespace string
	Partition string
	// Health is the status of the instance's service check; "" means the
	// instance has no service check.
	Health string
}

type node struct {
	Node
	createIndex, modifyIndex uint64
	services                 map[string]*service // by ID
}

type service struct {
	Service
	createIndex, modifyIndex uint64
	healthIndex              uint64
}

// Catalog is a fake Consul agent and catalog. The zero value is not usable;
// call New.
type Catalog struct {
	dc string

	mu            sync.Mutex
	index         uint64
	nodes         map[string]*node
	byName        map[string]map[*service]struct{}
	svcIndex      map[string]uint64 // kept after the last instance leaves
	servicesIndex uint64
	wake          map[string]chan struct{} // per service name
	catalogWake   chan struct{}
	requests      map[string]uint64
}

// New returns an empty catalog of datacenter dc ("" means dc1).
func New(dc string) *Catalog {
	if dc == "" {
		dc = "dc1"
	}
	return &Catalog{
		dc:            dc,
		index:         1,
		servicesIndex: 1,
		nodes:         map[string]*node{},
		byName:        map[string]map[*service]struct{}{},
		svcIndex:      map[string]uint64{},
		wake:          map[string]chan struct{}{},
		catalogWake:   make(chan struct{}),
		requests:      map[string]uint64{},
	}
}

// Datacenter returns the datacenter name.
func (c *Catalog) Datacenter() string { return c.dc }

// Index returns the current catalog index.
func (c *Catalog) Index() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.index
}

// Requests returns how many requests each endpoint served, keyed by the
// path without the service name (e.g. "/v1/health/service/").
func (c *Catalog) Requests() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.requests)
}

// next takes the next index; c.mu must be held.
func (c *Catalog) next() uint64 {
	c.index++
	return c.index
}

// touch records a change of the named services at index idx and wakes their
// queries; c.mu must be held.
func (c *Catalog) touch(idx uint64, catalog bool, names ...string) {
	for _, n := range names {
		c.svcIndex[n] = idx
		if ch, ok := c.wake[n]; ok {
			close(ch)
			delete(c.wake, n)
		}
	}
	if catalog {
		c.servicesIndex = idx
		close(c.catalogWake)
		c.catalogWake = make(chan struct{})
	}
}

// SetNode adds a node or replaces its address, meta, tagged addresses and
// health; its services stay.
func (c *Catalog) SetNode(n Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	idx := c.next()
	n.Meta = maps.Clone(n.Meta)
	n.TaggedAddresses = maps.Clone(n.TaggedAddresses)
	old, ok := c.nodes[n.Name]
	if !ok {
		c.nodes[n.Name] = &node{Node: n, createIndex: idx, modifyIndex: idx, services: map[string]*service{}}
		c.touch(idx, true)
		return
	}
	old.Node = n
	old.modifyIndex = idx
	c.touch(idx, true, old.serviceNames()...)
}

// SetNodeHealth sets the status of a node's serfHealth check.
func (c *Catalog) SetNodeHealth(name, status string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[name]
	if !ok {
		return fmt.Errorf("node %q: %w", name, ErrUnknownNode)
	}
	n.Health = status
	c.touch(c.next(), false, n.serviceNames()...)
	return nil
}

// RemoveNode deregisters a node and every service on it; false when there
// was no such node.
func (c *Catalog) RemoveNode(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[name]
	if !ok {
		return false
	}
	names := n.serviceNames()
	for _, s := range n.services {
		c.unindex(s)
	}
	delete(c.nodes, name)
	c.touch(c.next(), true, names...)
	return true
}

// SetService registers a service instance or replaces it (same node and ID).
func (c *Catalog) SetService(s Service) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[s.Node]
	if !ok {
		return fmt.Errorf("service %q on node %q: %w", s.Name, s.Node, ErrUnknownNode)
	}
	if s.Name == "" {
		return fmt.Errorf("service on node %q: empty name", s.Node)
	}
	if s.ID == "" {
		s.ID = s.Name
	}
	s.Tags = slices.Clone(s.Tags)
	s.Meta = maps.Clone(s.Meta)
	idx := c.next()
	names := []string{s.Name}
	ns := &service{Service: s, createIndex: idx, modifyIndex: idx, healthIndex: idx}
	if old, ok := n.services[s.ID]; ok {
		ns.createIndex = old.createIndex
		c.unindex(old)
		if old.Name != s.Name {
			names = append(names, old.Name)
		}
	}
	n.services[s.ID] = ns
	if c.byName[s.Name] == nil {
		c.byName[s.Name] = map[*service]struct{}{}
	}
	c.byName[s.Name][ns] = struct{}{}
	c.touch(idx, true, names...)
	return nil
}

// RemoveService deregisters a service instance; false when there was none.
func (c *Catalog) RemoveService(nodeName, id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[nodeName]
	if !ok {
		return false
	}
	s, ok := n.services[id]
	if !ok {
		return false
	}
	c.unindex(s)
	delete(n.services, id)
	c.touch(c.next(), true, s.Name)
	return true
}

// SetServiceHealth sets the status of an instance's service check.
func (c *Catalog) SetServiceHealth(nodeName, id, status string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[nodeName]
	if !ok {
		return fmt.Errorf("node %q: %w", nodeName, ErrUnknownNode)
	}
	s, ok := n.services[id]
	if !ok {
		return fmt.Errorf("service %q on node %q: %w", id, nodeName, ErrUnknownService)
	}
	idx := c.next()
	s.Health = status
	s.healthIndex = idx
	c.touch(idx, false, s.Name)
	return nil
}

func (c *Catalog) unindex(s *service) {
	m := c.byName[s.Name]
	delete(m, s)
	if len(m) == 0 {
		delete(c.byName, s.Name)
	}
}

func (n *node) serviceNames() []string {
	var names []string
	for _, s := range n.services {
		if !slices.Contains(names, s.Name) {
			names = append(names, s.Name)
		}
	}
	return names
}

// ServeHTTP implements http.Handler.
func (c *Catalog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	q := r.URL.Query()
	if dc := q.Get("dc"); dc != "" && dc != c.dc {
		c.count(p)
		http.Error(w, fmt.Sprintf("No path to datacenter %q", dc), http.StatusInternalServerError)
		return
	}
	if q.Get("filter") != "" {
		c.count(p)
		http.Error(w, "filter expressions are not supported by the fake Consul", http.StatusBadRequest)
		return
	}
	switch {
	case p == "/v1/agent/self":
		c.count(p)
		writeJSON(w, c.agentSelf(), 0)
	case p == "/v1/status/leader":
		c.count(p)
		writeJSON(w, "127.0.0.1:8300", 0)
	case p == "/v1/catalog/services":
		c.count(p)
		c.blocking(w, r, func() (uint64, <-chan struct{}, any) { return c.catalogServices(q) })
	case p == "/v1/catalog/nodes":
		c.count(p)
		c.blocking(w, r, func() (uint64, <-chan struct{}, any) { return c.catalogNodes(q) })
	case strings.HasPrefix(p, "/v1/catalog/service/") && len(p) > len("/v1/catalog/service/"):
		c.count("/v1/catalog/service/")
		name := strings.TrimPrefix(p, "/v1/catalog/service/")
		c.blocking(w, r, func() (uint64, <-chan struct{}, any) { return c.catalogService(name, q) })
	case strings.HasPrefix(p, "/v1/health/service/") && len(p) > len("/v1/health/service/"):
		c.count("/v1/health/service/")
		name := strings.TrimPrefix(p, "/v1/health/service/")
		c.blocking(w, r, func() (uint64, <-chan struct{}, any) { return c.healthService(name, q) })
	default:
		c.count("other")
		http.NotFound(w, r)
	}
}

func (c *Catalog) count(p string) {
	c.mu.Lock()
	c.requests[p]++
	c.mu.Unlock()
}

// blocking answers a blocking query: read is called with c.mu held and
// returns the result's index, a channel closed when it may change, and the
// body.
func (c *Catalog) blocking(w http.ResponseWriter, r *http.Request, read func() (uint64, <-chan struct{}, any)) {
	q := r.URL.Query()
	var minIndex uint64
	if s := q.Get("index"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			http.Error(w, fmt.Sprintf("Invalid index %q: %v", s, err), http.StatusBadRequest)
			return
		}
		minIndex = v
	}
	wait := defaultWait
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			http.Error(w, fmt.Sprintf("Invalid wait time %q: %v", s, err), http.StatusBadRequest)
			return
		}
		wait = min(d, maxWait)
	}
	var timeout <-chan time.Time
	if minIndex > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		c.mu.Lock()
		idx, ch, body := read()
		c.mu.Unlock()
		if minIndex == 0 || idx > minIndex {
			writeJSON(w, body, idx)
			return
		}
		select {
		case <-ch:
		case <-timeout:
			writeJSON(w, body, idx)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, body any, index uint64) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if index > 0 {
		h.Set("X-Consul-Index", strconv.FormatUint(index, 10))
		h.Set("X-Consul-LastContact", "0")
		h.Set("X-Consul-KnownLeader", "true")
	}
	b, err := json.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(b)
}

func (c *Catalog) agentSelf() map[string]map[string]any {
	return map[string]map[string]any{
		"Config": {
			"Datacenter":        c.dc,
			"PrimaryDatacenter": c.dc,
			"NodeName":          "fake-consul",
			"NodeID":            "00000000-0000-0000-0000-000000000001",
			"Server":            true,
			"Version":           "1.21.0",
			"Revision":          "fake",
		},
		"Member": {"Name": "fake-consul", "Addr": "127.0.0.1", "Port": 8301, "Status": 1},
		"Meta":   {"consul-network-segment": ""},
		"Stats":  {},
	}
}

// nodeMetaFilter parses ?node-meta=key:value (repeated; all must match).
func nodeMetaFilter(q map[string][]string) map[string]string {
	m := map[string]string{}
	for _, kv := range q["node-meta"] {
		k, v, _ := strings.Cut(kv, ":")
		m[k] = v
	}
	return m
}

func metaMatches(meta, want map[string]string) bool {
	for k, v := range want {
		if got, ok := meta[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func hasTags(tags, want []string) bool {
	for _, t := range want {
		if !slices.Contains(tags, t) {
			return false
		}
	}
	return true
}

func (c *Catalog) catalogServices(q map[string][]string) (uint64, <-chan struct{}, any) {
	want := nodeMetaFilter(q)
	out := map[string][]string{}
	for name, insts := range c.byName {
		for s := range insts {
			if !metaMatches(c.nodes[s.Node].Meta, want) {
				continue
			}
			tags, ok := out[name]
			if !ok {
				tags = []string{}
			}
			for _, t := range s.Tags {
				if !slices.Contains(tags, t) {
					tags = append(tags, t)
				}
			}
			out[name] = tags
		}
	}
	for _, tags := range out {
		slices.Sort(tags)
	}
	return c.servicesIndex, c.catalogWake, out
}

func (c *Catalog) catalogNodes(q map[string][]string) (uint64, <-chan struct{}, any) {
	want := nodeMetaFilter(q)
	out := []*consulapi.Node{}
	for _, n := range c.nodes {
		if metaMatches(n.Meta, want) {
			out = append(out, c.apiNode(n))
		}
	}
	slices.SortFunc(out, func(a, b *consulapi.Node) int { return cmp.Compare(a.Node, b.Node) })
	return c.servicesIndex, c.catalogWake, out
}

// instances returns the instances of a service that match the query's tag
// and node-meta filters, sorted by node and ID, with the service's index and
// wake channel; c.mu must be held.
func (c *Catalog) instances(name string, q map[string][]string) (uint64, <-chan struct{}, []*service) {
	idx, ok := c.svcIndex[name]
	var ch <-chan struct{}
	if ok {
		w, ok := c.wake[name]
		if !ok {
			w = make(chan struct{})
			c.wake[name] = w
		}
		ch = w
	} else {
		// Never registered: the services table's index, woken by any
		// registration.
		idx, ch = c.servicesIndex, c.catalogWake
	}
	want := nodeMetaFilter(q)
	var out []*service
	for s := range c.byName[name] {
		if hasTags(s.Tags, q["tag"]) && metaMatches(c.nodes[s.Node].Meta, want) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *service) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.ID, b.ID))
	})
	return idx, ch, out
}

func (c *Catalog) apiNode(n *node) *consulapi.Node {
	return &consulapi.Node{
		ID:              nodeID(n.Name),
		Node:            n.Name,
		Address:         n.Address,
		Datacenter:      c.dc,
		TaggedAddresses: orEmpty(n.TaggedAddresses),
		Meta:            orEmpty(n.Meta),
		CreateIndex:     n.createIndex,
		ModifyIndex:     n.modifyIndex,
	}
}

func (c *Catalog) catalogService(name string, q map[string][]string) (uint64, <-chan struct{}, any) {
	idx, ch, insts := c.instances(name, q)
	out := make([]*consulapi.CatalogService, 0, len(insts))
	for _, s := range insts {
		n := c.nodes[s.Node]
		out = append(out, &consulapi.CatalogService{
			ID:                     nodeID(n.Name),
			Node:                   n.Name,
			Address:                n.Address,
			Datacenter:             c.dc,
			TaggedAddresses:        orEmpty(n.TaggedAddresses),
			NodeMeta:               orEmpty(n.Meta),
			ServiceID:              s.ID,
			ServiceName:            s.Name,
			ServiceAddress:         s.Address,
			ServiceTaggedAddresses: map[string]consulapi.ServiceAddress{},
			ServiceTags:            orEmptySlice(s.Tags),
			ServiceMeta:            orEmpty(s.Meta),
			ServicePort:            s.Port,
			ServiceWeights:         consulapi.Weights{Passing: 1, Warning: 1},
			CreateIndex:            s.createIndex,
			ModifyIndex:            s.modifyIndex,
			Namespace:              s.Namespace,
			Partition:              s.Partition,
		})
	}
	return idx, ch, out
}

func (c *Catalog) healthService(name string, q map[string][]string) (uint64, <-chan struct{}, any) {
	idx, ch, insts := c.instances(name, q)
	_, passingOnly := q["passing"]
	if v := firstOf(q["passing"]); passingOnly && v != "" {
		if b, err := strconv.ParseBool(v); err == nil {
			passingOnly = b
		}
	}
	out := make([]*consulapi.ServiceEntry, 0, len(insts))
	for _, s := range insts {
		n := c.nodes[s.Node]
		checks := consulapi.HealthChecks{{
			Node:        n.Name,
			CheckID:     "serfHealth",
			Name:        "Serf Health Status",
			Status:      cmp.Or(n.Health, Passing),
			Output:      "Agent alive and reachable",
			Type:        "",
			CreateIndex: n.createIndex,
			ModifyIndex: n.modifyIndex,
		}}
		if s.Health != "" {
			checks = append(checks, &consulapi.HealthCheck{
				Node:        n.Name,
				CheckID:     "service:" + s.ID,
				Name:        "Service '" + s.Name + "' check",
				Status:      s.Health,
				ServiceID:   s.ID,
				ServiceName: s.Name,
				ServiceTags: orEmptySlice(s.Tags),
				Type:        "http",
				Namespace:   s.Namespace,
				Partition:   s.Partition,
				CreateIndex: s.createIndex,
				ModifyIndex: s.healthIndex,
			})
		}
		if passingOnly && checks.AggregatedStatus() != Passing {
			continue
		}
		out = append(out, &consulapi.ServiceEntry{
			Node: c.apiNode(n),
			Service: &consulapi.AgentService{
				ID:              s.ID,
				Service:         s.Name,
				Tags:            orEmptySlice(s.Tags),
				Meta:            orEmpty(s.Meta),
				Port:            s.Port,
				Address:         s.Address,
				TaggedAddresses: map[string]consulapi.ServiceAddress{},
				Weights:         consulapi.AgentWeights{Passing: 1, Warning: 1},
				CreateIndex:     s.createIndex,
				ModifyIndex:     s.modifyIndex,
				Namespace:       s.Namespace,
				Partition:       s.Partition,
				Datacenter:      c.dc,
			},
			Checks: checks,
		})
	}
	return idx, ch, out
}

func firstOf(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func orEmptySlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// nodeID derives a stable UUID-shaped node id from the node name.
func nodeID(name string) string {
	var h uint64 = 14695981039346656037
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	s := fmt.Sprintf("%016x%016x", h, ^h)
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}

var _ http.Handler = (*Catalog)(nil)
