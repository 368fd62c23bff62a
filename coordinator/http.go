package coordinator

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
)

// Handler serves the coordinator's HTTP pages:
//
//	/api/v1/targets  the fleet's targets in Prometheus's response shape, each
//	                 naming its owner(s) (?scrapePool=job filters)
//	/ring            the ring's members (shardring status page)
//	/assignment      the last ring assignment's loads and bounds
func (c *Coordinator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/targets", c.ServeTargets)
	mux.HandleFunc("/ring", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		ring := c.ring
		c.mu.Unlock()
		if ring == nil {
			http.Error(w, "no workers on the ring", http.StatusServiceUnavailable)
			return
		}
		ring.ServeHTTP(w, r)
	})
	mux.HandleFunc("/assignment", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		a := c.lastAsgn
		c.mu.Unlock()
		if a == nil {
			http.Error(w, "no assignment yet", http.StatusServiceUnavailable)
			return
		}
		a.ServeHTTP(w, r)
	})
	return mux
}

type apiTarget struct {
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	Labels           map[string]string `json:"labels"`
	ScrapePool       string            `json:"scrapePool"`
	ScrapeURL        string            `json:"scrapeUrl"`
	GlobalURL        string            `json:"globalUrl"`
	LastError        string            `json:"lastError"`
	Health           string            `json:"health"`
	ScrapeInterval   string            `json:"scrapeInterval,omitempty"`
	ScrapeTimeout    string            `json:"scrapeTimeout,omitempty"`
	// Owner is the worker scraping the target (replica 0, not outgoing);
	// Owners lists every worker holding it with its state.
	Owner  string     `json:"owner"`
	Owners []apiOwner `json:"owners"`
}

type apiOwner struct {
	Worker  string `json:"worker"`
	State   string `json:"state"`
	Replica uint32 `json:"replica"`
}

// ServeTargets serves /api/v1/targets for the whole fleet. Scrape health
// comes from heartbeats (up or down); last errors stay on the workers'
// own /api/v1/targets.
func (c *Coordinator) ServeTargets(w http.ResponseWriter, r *http.Request) {
	pool := r.URL.Query().Get("scrapePool")
	type row struct {
		job    string
		lbls   labels.Labels
		owners []apiOwner
		health string
		cfg    *config.ScrapeConfig
	}
	c.mu.Lock()
	rows := make([]row, 0, c.targets.len())
	for _, t := range c.targets.all() {
		if pool != "" && t.Job != pool {
			continue
		}
		if _, ok := c.admin.excluded(t.Job, t.Address); ok {
			continue
		}
		rw := row{job: t.Job, lbls: t.Labels, cfg: c.jobCfgs[t.Job].ScrapeConfig, health: "unknown"}
		if t.series > 0 || t.up {
			rw.health = "down"
			if t.up {
				rw.health = "up"
			}
		}
		for _, s := range t.slots {
			rw.owners = append(rw.owners, apiOwner{Worker: s.w.id, State: strings.ToLower(strings.TrimPrefix(s.state.String(), "TARGET_STATE_")), Replica: s.replica})
		}
		rows = append(rows, rw)
	}
	c.mu.Unlock()
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(strings.Compare(a.job, b.job), labels.Compare(a.lbls, b.lbls))
	})

	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"success","data":{"activeTargets":[`))
	lb := labels.NewBuilder(labels.EmptyLabels())
	enc := json.NewEncoder(w)
	for i, rw := range rows {
		at := apiTarget{
			DiscoveredLabels: rw.lbls.Map(),
			ScrapePool:       rw.job,
			Health:           rw.health,
			Owners:           rw.owners,
		}
		for _, o := range rw.owners {
			if o.State != "outgoing" && o.Replica == 0 && (at.Owner == "" || o.State == "active") {
				at.Owner = o.Worker
			}
		}
		if rw.cfg != nil {
			tl := make(model.LabelSet, rw.lbls.Len())
			rw.lbls.Range(func(l labels.Label) { tl[model.LabelName(l.Name)] = model.LabelValue(l.Value) })
			res, err := scrape.PopulateLabels(lb, rw.cfg, tl, nil)
			if err == nil && !res.IsEmpty() {
				at.Labels = res.Map()
				st := scrape.NewTarget(res, rw.cfg, tl, nil)
				at.ScrapeURL = st.URL().String()
				at.GlobalURL = at.ScrapeURL
				at.ScrapeInterval = res.Get(model.ScrapeIntervalLabel)
				at.ScrapeTimeout = res.Get(model.ScrapeTimeoutLabel)
				at.Labels = publicLabels(res)
			} else if err != nil {
				at.LastError = err.Error()
			}
		}
		if at.Labels == nil {
			at.Labels = publicLabels(rw.lbls)
			at.Labels[model.JobLabel] = rw.job
		}
		if i > 0 {
			_, _ = w.Write([]byte{','})
		}
		if err := enc.Encode(at); err != nil {
			return
		}
	}
	_, _ = w.Write([]byte(`],"droppedTargets":[]}}`))
}

func publicLabels(ls labels.Labels) map[string]string {
	m := map[string]string{}
	ls.Range(func(l labels.Label) {
		if !strings.HasPrefix(l.Name, model.ReservedLabelPrefix) {
			m[l.Name] = l.Value
		}
	})
	return m
}
