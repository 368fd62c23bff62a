package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/util/teststorage"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/shardscrape/shardscrape/internal/synth"
	"github.com/shardscrape/shardscrape/internal/testenv"
)

// This file checks deploy/rules and deploy/dashboards: every rule file loads
// with Prometheus's rulefmt, every PromQL expression (rules, panel targets,
// templating queries) parses with Prometheus's parser, every shardscrape_*
// and prometheus_* metric they name is one the real binaries expose, and the
// dashboards are well-formed Grafana JSON. The expressions are then evaluated
// with Prometheus's engine on what a running coordinator and scraper expose
// and write (and run in VictoriaMetrics), each alert on series of a healthy
// and a broken cluster, and the Kubernetes views on one node and one pod of
// every exporter.

const (
	rulesDir      = "rules"
	dashboardsDir = "dashboards"
	runbookFile   = "dashboards/README.md"
	clusterLabel  = "cluster_name"
	datasourceUID = "${datasource}"
)

// promqlParser parses as Prometheus does by default.
var promqlParser = parser.NewParser(parser.Options{})

// expression is one PromQL expression found in a rule file or dashboard.
type expression struct {
	where string // file and rule, panel or variable
	expr  string // Grafana variables replaced (see grafanaExpr)
	rule  bool   // from a rule file
	alert bool   // an alerting rule
}

// --- rules ---

// ruleFiles lists deploy/rules/*.yml and *.yaml.
func ruleFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.yml", "*.yaml"} {
		m, err := filepath.Glob(filepath.Join(rulesDir, pat))
		require.NoError(t, err)
		files = append(files, m...)
	}
	require.NotEmpty(t, files, "no rule files in %s", rulesDir)
	return files
}

// loadRules parses a rule file with Prometheus's rulefmt: unknown fields,
// bad PromQL, bad templates and legacy-invalid names are errors (vmalert and
// the Thanos ruler take the same format).
func loadRules(file string) (*rulefmt.RuleGroups, error) {
	groups, errs := rulefmt.ParseFile(file, false, model.LegacyValidation, promqlParser, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = err.Error()
		}
		return nil, fmt.Errorf("load rules %s: %s", file, strings.Join(msgs, "; "))
	}
	return groups, nil
}

// ruleExpressions returns every rule's expression and the names recorded.
func ruleExpressions(t *testing.T) (exprs []expression, recorded map[string]bool) {
	t.Helper()
	recorded = map[string]bool{}
	for _, file := range ruleFiles(t) {
		groups, err := loadRules(file)
		require.NoError(t, err)
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				name := r.Alert
				if r.Record != "" {
					name = r.Record
					recorded[r.Record] = true
				}
				exprs = append(exprs, expression{where: fmt.Sprintf("%s: group %s: %s", file, g.Name, name), expr: r.Expr, rule: true, alert: r.Alert != ""})
			}
		}
	}
	return exprs, recorded
}

// TestMonitoringRulesLoad: every rule file loads with rulefmt; every alert
// has a for, a severity, a summary, a description and a runbook that
// exists; alert names are unique; every aggregation keeps the cluster label,
// so that one rule set serves every cluster of a shared store.
func TestMonitoringRulesLoad(t *testing.T) {
	readme, err := os.ReadFile(runbookFile)
	require.NoError(t, err)
	alerts := map[string]string{}
	for _, file := range ruleFiles(t) {
		groups, err := loadRules(file)
		require.NoError(t, err)
		require.NotEmpty(t, groups.Groups, file)
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					require.True(t, strings.HasPrefix(r.Record, "shardscrape:"), "%s: recording rule %s: name it shardscrape:<what>:<how>", file, r.Record)
					require.NoError(t, clusterAggregations(r.Expr), "%s: %s", file, r.Record)
					continue
				}
				where := fmt.Sprintf("%s: alert %s", file, r.Alert)
				require.NotContains(t, alerts, r.Alert, "%s: also in %s", where, alerts[r.Alert])
				alerts[r.Alert] = file
				require.Positive(t, r.For, "%s: no for:", where)
				require.Contains(t, []string{"critical", "warning", "info"}, r.Labels["severity"], "%s: severity", where)
				for _, a := range []string{"summary", "description", "runbook_url"} {
					require.NotEmpty(t, r.Annotations[a], "%s: annotation %s", where, a)
				}
				anchor := "#" + strings.ToLower(r.Alert)
				require.True(t, strings.HasSuffix(r.Annotations["runbook_url"], "/deploy/dashboards/README.md"+anchor), "%s: runbook_url %q", where, r.Annotations["runbook_url"])
				require.Contains(t, string(readme), "\n### "+r.Alert+"\n", "%s: no runbook section in %s", where, runbookFile)
				require.NoError(t, clusterAggregations(r.Expr), where)
			}
		}
	}
	require.NotEmpty(t, alerts)
}

// TestMonitoringRulesKeyedByPod: no rule tells replicas or workers apart
// by instance (their pod IP, new on every restart, which would restart an
// alert's for:); kubernetes_pod_name is stable.
func TestMonitoringRulesKeyedByPod(t *testing.T) {
	exprs, _ := ruleExpressions(t)
	require.NotEmpty(t, exprs)
	for _, x := range exprs {
		require.NotRegexp(t, `\binstance\b`, x.expr, x.where)
	}
}

// TestMonitoringLoadRulesRejects: the loader fails on what vmalert, the Thanos ruler
// or Prometheus would refuse.
func TestMonitoringLoadRulesRejects(t *testing.T) {
	for name, content := range map[string]string{
		"unknown field": "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 1m\n    severity: page\n",
		"bad PromQL":    "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: sum(up\n",
		"bad template":  "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    annotations:\n      summary: '{{ $labels.instance '\n",
		"bad record":    "groups:\n- name: g\n  rules:\n  - record: 'shardscrape coverage'\n    expr: up\n",
		"no expr":       "groups:\n- name: g\n  rules:\n  - alert: A\n",
	} {
		file := filepath.Join(t.TempDir(), "rules.yml")
		require.NoError(t, os.WriteFile(file, []byte(content), 0o600))
		_, err := loadRules(file)
		require.Error(t, err, name)
	}
}

// clusterAggregations reports an aggregation that drops the cluster label:
// `sum(x)` or `sum by (job) (x)` would merge clusters.
func clusterAggregations(expr string) error {
	e, err := promqlParser.ParseExpr(expr)
	if err != nil {
		return err
	}
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		a, ok := n.(*parser.AggregateExpr)
		if !ok || bad != nil {
			return nil
		}
		if a.Without {
			if slices.Contains(a.Grouping, clusterLabel) {
				bad = fmt.Errorf("%s: aggregates %s away", a, clusterLabel)
			}
			return nil
		}
		if !slices.Contains(a.Grouping, clusterLabel) {
			bad = fmt.Errorf("%s: aggregates %s away (add it to by)", a, clusterLabel)
		}
		return nil
	})
	return bad
}

func TestMonitoringClusterAggregations(t *testing.T) {
	require.NoError(t, clusterAggregations(`max by (cluster_name) (x) / avg by (cluster_name, instance) (y)`))
	require.NoError(t, clusterAggregations(`rate(x[5m]) > 0`))
	require.Error(t, clusterAggregations(`sum(x)`))
	require.Error(t, clusterAggregations(`max by (cluster_name) (x) / sum by (job) (y)`))
	require.Error(t, clusterAggregations(`sum without (cluster_name) (x)`))
}

// --- dashboards ---

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID          int           `json:"id"`
	Type        string        `json:"type"`
	Title       string        `json:"title"`
	Datasource  *datasource   `json:"datasource"`
	Targets     []panelTarget `json:"targets"`
	Panels      []panel       `json:"panels"` // a collapsed row's
	GridPos     *gridPos      `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
}

type gridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// overlaps reports whether two grid positions share a cell.
func (g gridPos) overlaps(o gridPos) bool {
	return g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H
}

type panelTarget struct {
	RefID        string      `json:"refId"`
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat"`
	Datasource   *datasource `json:"datasource"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasource     `json:"datasource"`
}

// queryText returns a variable's query: a plain string or Grafana's object
// form {"query": "...", "refId": ...}.
func (v variable) queryText() (string, error) {
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var o struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &o); err != nil {
		return "", fmt.Errorf("variable %s: query %s: %w", v.Name, v.Query, err)
	}
	return o.Query, nil
}

// dashboardFiles lists deploy/dashboards/*.json.
func dashboardFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no dashboards in %s", dashboardsDir)
	return files
}

func loadDashboard(t *testing.T, file string) dashboard {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	dec := json.NewDecoder(strings.NewReader(string(b)))
	var d dashboard
	require.NoError(t, dec.Decode(&d), "%s: not valid dashboard JSON", file)
	_, err = dec.Token()
	require.ErrorIs(t, err, io.EOF, "%s: data after the dashboard", file)
	return d
}

// allPanels flattens rows (collapsed rows nest their panels).
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// Grafana's built-in interval variables, replaced by a duration so that the
// expression parses; any other variable becomes a string naming it.
var grafanaBuiltins = map[string]string{
	"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__auto": "1m",
}

var grafanaVarRe = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]`)

// grafanaVarValue is what a non-built-in variable is replaced by.
func grafanaVarValue(name string) string { return "__grafana_var_" + name + "__" }

// grafanaExpr replaces Grafana variables in a query and returns the names of
// the non-built-in ones it uses.
func grafanaExpr(q string) (expr string, vars []string) {
	expr = grafanaVarRe.ReplaceAllStringFunc(q, func(m string) string {
		sm := grafanaVarRe.FindStringSubmatch(m)
		name := sm[1] + sm[2] + sm[3]
		if d, ok := grafanaBuiltins[name]; ok {
			return d
		}
		vars = append(vars, name)
		return grafanaVarValue(name)
	})
	return expr, vars
}

// grafanaVariableQuery turns a templating query of the Prometheus data
// source into a PromQL expression to check: label_values(label) has none,
// label_values(selector, label) its selector, query_result(expr) its expr.
func grafanaVariableQuery(q string) (expr string, err error) {
	q = strings.TrimSpace(q)
	call := func(fn string) (string, bool) {
		if !strings.HasPrefix(q, fn+"(") || !strings.HasSuffix(q, ")") {
			return "", false
		}
		return strings.TrimSpace(q[len(fn)+1 : len(q)-1]), true
	}
	if args, ok := call("label_values"); ok {
		sel, label := "", args
		if i := strings.LastIndexByte(args, ','); i >= 0 {
			sel, label = strings.TrimSpace(args[:i]), strings.TrimSpace(args[i+1:])
		}
		if !model.LegacyValidation.IsValidLabelName(label) {
			return "", fmt.Errorf("label_values: bad label name %q in %q", label, q)
		}
		if sel == "" {
			return "", nil
		}
		e, err := promqlParser.ParseExpr(sel)
		if err != nil {
			return "", fmt.Errorf("label_values selector %q: %w", sel, err)
		}
		if _, ok := e.(*parser.VectorSelector); !ok {
			return "", fmt.Errorf("label_values takes a series selector, not %q", sel)
		}
		return sel, nil
	}
	if args, ok := call("query_result"); ok {
		return args, nil
	}
	return "", fmt.Errorf("templating query %q: only label_values(...) and query_result(...) are supported here", q)
}

func TestMonitoringGrafanaVariableQuery(t *testing.T) {
	for q, want := range map[string]string{
		"label_values(up, cluster_name)":                             "up",
		"label_values(cluster_name)":                                 "",
		`label_values(node_uname_info{a=~"x,y"}, ip)`:                `node_uname_info{a=~"x,y"}`,
		"query_result(topk(3, sum by (job) (up)))":                   "topk(3, sum by (job) (up))",
		" label_values( kube_node_info{internal_ip=~\"\"} , node ) ": `kube_node_info{internal_ip=~""}`,
	} {
		got, err := grafanaVariableQuery(q)
		require.NoError(t, err, q)
		require.Equal(t, want, got, q)
	}
	for _, q := range []string{"label_values(up, 1bad)", "label_values(sum(up), job)", "metrics(up.*)", "label_values(up{, job)"} {
		_, err := grafanaVariableQuery(q)
		require.Error(t, err, q)
	}
	expr, vars := grafanaExpr(`rate(x{a=~"$cluster", b="${node:regex}", c="[[dev]]"}[$__rate_interval])`)
	require.Equal(t, `rate(x{a=~"__grafana_var_cluster__", b="__grafana_var_node__", c="__grafana_var_dev__"}[5m])`, expr)
	require.Equal(t, []string{"cluster", "node", "dev"}, vars)
}

// dashboardExpressions checks one dashboard's structure and returns its
// expressions: valid JSON, a current schema, unique panel ids, every panel
// querying through the ${datasource} variable, every variable used defined
// (before the queries that use it), the cluster variable as asked, every
// selector scoped to $cluster.
func dashboardExpressions(t *testing.T, file string) []expression {
	t.Helper()
	d := loadDashboard(t, file)
	require.NotEmpty(t, d.UID, file)
	require.NotEmpty(t, d.Title, file)
	require.GreaterOrEqual(t, d.SchemaVersion, 39, "%s: schemaVersion of Grafana 11 or later", file)

	var exprs []expression
	defined := map[string]bool{}
	use := func(where string, vars []string) {
		for _, v := range vars {
			require.True(t, defined[v], "%s: variable $%s is not defined (before it)", where, v)
		}
	}
	for _, v := range d.Templating.List {
		where := fmt.Sprintf("%s: variable %s", file, v.Name)
		require.NotContains(t, defined, v.Name, where)
		switch v.Type {
		case "datasource":
			q, err := v.queryText()
			require.NoError(t, err, where)
			require.Equal(t, "prometheus", q, where)
		case "query":
			require.NotNil(t, v.Datasource, "%s: no datasource", where)
			require.Equal(t, datasource{Type: "prometheus", UID: datasourceUID}, *v.Datasource, where)
			q, err := v.queryText()
			require.NoError(t, err, where)
			q, vars := grafanaExpr(q)
			use(where, vars)
			e, err := grafanaVariableQuery(q)
			require.NoError(t, err, where)
			if e != "" {
				exprs = append(exprs, expression{where: where, expr: e})
			}
		default:
			t.Fatalf("%s: type %q not checked here", where, v.Type)
		}
		defined[v.Name] = true
	}
	require.True(t, defined["datasource"], "%s: no datasource variable", file)
	require.True(t, defined["cluster"], "%s: no cluster variable", file)
	for _, v := range d.Templating.List {
		if v.Name == "cluster" {
			q, err := v.queryText()
			require.NoError(t, err)
			require.Equal(t, "label_values(up, cluster_name)", q, file)
		}
	}

	for i, p := range d.Panels {
		for _, o := range d.Panels[:i] {
			if p.GridPos != nil && o.GridPos != nil {
				require.False(t, p.GridPos.overlaps(*o.GridPos), "%s: panels %d and %d overlap", file, o.ID, p.ID)
			}
		}
	}
	ids := map[int]string{}
	for _, p := range allPanels(d.Panels) {
		where := fmt.Sprintf("%s: panel %d %q", file, p.ID, p.Title)
		require.Positive(t, p.ID, where)
		require.NotContains(t, ids, p.ID, "%s: id also used by %q", where, ids[p.ID])
		ids[p.ID] = p.Title
		require.NotNil(t, p.GridPos, "%s: no gridPos", where)
		g := *p.GridPos
		require.True(t, g.W > 0 && g.H > 0 && g.X >= 0 && g.Y >= 0 && g.X+g.W <= 24, "%s: gridPos %+v outside the 24-column grid", where, g)
		if p.Type == "row" {
			require.Empty(t, p.Targets, where)
			continue
		}
		require.NotNil(t, p.Datasource, "%s: no datasource", where)
		require.Equal(t, datasource{Type: "prometheus", UID: datasourceUID}, *p.Datasource, where)
		require.NotEmpty(t, p.Targets, "%s: no query", where)
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			tw := where + " target " + tg.RefID
			require.NotEmpty(t, tg.RefID, tw)
			require.False(t, refs[tg.RefID], "%s: refId twice", tw)
			refs[tg.RefID] = true
			if tg.Datasource != nil {
				require.Equal(t, *p.Datasource, *tg.Datasource, tw)
			}
			require.NotEmpty(t, tg.Expr, "%s: no expr", tw)
			e, vars := grafanaExpr(tg.Expr)
			use(tw, vars)
			require.NoError(t, scopedToCluster(e), tw)
			exprs = append(exprs, expression{where: tw, expr: e})
		}
	}
	return exprs
}

// scopedToCluster reports a selector without cluster_name=~"$cluster".
func scopedToCluster(expr string) error {
	e, err := promqlParser.ParseExpr(expr)
	if err != nil {
		return err
	}
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok || bad != nil {
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == clusterLabel && m.Type == labels.MatchRegexp && m.Value == grafanaVarValue("cluster") {
				return nil
			}
		}
		bad = fmt.Errorf("%s: not scoped to %s=~\"$cluster\"", vs, clusterLabel)
		return nil
	})
	return bad
}

// TestMonitoringDashboards checks every dashboard's structure and that
// every expression in it parses.
func TestMonitoringDashboards(t *testing.T) {
	uids := map[string]string{}
	for _, file := range dashboardFiles(t) {
		d := loadDashboard(t, file)
		require.NotContains(t, uids, d.UID, "%s: uid also in %s", file, uids[d.UID])
		uids[d.UID] = file
		for _, e := range dashboardExpressions(t, file) {
			_, err := promqlParser.ParseExpr(e.expr)
			require.NoError(t, err, "%s: %s", e.where, e.expr)
		}
	}
	for _, want := range []string{"shardscrape-pipeline.json", "cluster.json", "node.json"} {
		require.FileExists(t, filepath.Join(dashboardsDir, want))
	}
	// The pipeline's series come from the kubernetes-pods job: replicas and
	// workers are told apart by kubernetes_pod_name (stable across restarts,
	// the coordinator's worker label), never by instance (the pod IP).
	for _, p := range allPanels(loadDashboard(t, filepath.Join(dashboardsDir, "shardscrape-pipeline.json")).Panels) {
		for _, tg := range p.Targets {
			require.NotRegexp(t, `\binstance\b`, tg.Expr, "panel %q", p.Title)
			require.NotContains(t, tg.LegendFormat, "{{instance}}", "panel %q", p.Title)
		}
	}
	// The node views select nodes.
	for _, file := range []string{"cluster.json", "node.json"} {
		d := loadDashboard(t, filepath.Join(dashboardsDir, file))
		names := []string{}
		for _, v := range d.Templating.List {
			names = append(names, v.Name)
		}
		require.Contains(t, names, "node", file)
	}
}

// --- metric names against the real binaries ---

// exposition is what one binary's /metrics shows.
type exposition struct {
	names   map[string]bool
	samples testenv.MetricSet
}

func newExposition(ms testenv.MetricSet) exposition {
	e := exposition{names: map[string]bool{}, samples: ms}
	for _, s := range ms {
		e.names[s.Labels.Get(model.MetricNameLabel)] = true
	}
	return e
}

// has reports whether name is exposed: as is, as a classic histogram's
// _bucket (its _sum and _count are), or as a histogram used by its own name
// (native histograms).
func (e exposition) has(name string) bool {
	if e.names[name] {
		return true
	}
	base := strings.TrimSuffix(name, "_bucket")
	return e.names[base+"_sum"] && e.names[base+"_count"]
}

// hasLabel reports whether some exposed series of name (or its histogram
// base) has label=value.
func (e exposition) hasLabel(name, label, value string) bool {
	base := strings.TrimSuffix(name, "_bucket")
	for _, s := range e.samples {
		n := s.Labels.Get(model.MetricNameLabel)
		if (n == name || n == base+"_sum" || n == base+"_count") && s.Labels.Get(label) == value {
			return true
		}
	}
	return false
}

// Labels that the store adds to what a binary exposes (target and external
// labels), or that are only known after the scrape.
var storeLabels = map[string]bool{model.MetricNameLabel: true, clusterLabel: true, "instance": true, "job": true, "kubernetes_pod_name": true}

// lazyMetrics are metric vectors Prometheus's code creates at their first
// event, with no label values initialized, so a fresh binary does not
// expose them: name → the file of the Prometheus module that declares them
// (by the name without its namespace and subsystem), checked in the test.
var lazyMetrics = map[string]struct{ file, name string }{
	// A CounterVec by reason (too_old, dropped_series, ...).
	"prometheus_remote_storage_samples_dropped_total": {"storage/remote/queue_manager.go", `Name:        "samples_dropped_total"`},
}

// unexposedMetrics returns a problem for every selector of exprs naming a
// shardscrape_* metric neither binary exposes, a prometheus_* metric the
// scraper does not expose, a label value (equality matcher) no exposed series
// of that metric has, or a recording rule's name no rule records.
func unexposedMetrics(exprs []expression, coord, scraper exposition, recorded map[string]bool) []string {
	var problems []string
	for _, x := range exprs {
		e, err := promqlParser.ParseExpr(x.expr)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", x.where, err))
			continue
		}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			var in []exposition
			switch {
			case strings.HasPrefix(name, "shardscrape_"):
				in = []exposition{coord, scraper}
			case strings.HasPrefix(name, "prometheus_"):
				in = []exposition{scraper}
			case strings.Contains(name, ":"):
				if !recorded[name] {
					problems = append(problems, fmt.Sprintf("%s: %s: no rule records it", x.where, name))
				}
				return nil
			default:
				return nil
			}
			if _, ok := lazyMetrics[name]; ok {
				return nil
			}
			var found *exposition
			for i := range in {
				if in[i].has(name) {
					found = &in[i]
					break
				}
			}
			if found == nil {
				problems = append(problems, fmt.Sprintf("%s: %s is not exposed by the binaries", x.where, name))
				return nil
			}
			for _, m := range vs.LabelMatchers {
				if m.Type != labels.MatchEqual || storeLabels[m.Name] || strings.HasPrefix(m.Value, "__grafana_var_") {
					continue
				}
				if !found.hasLabel(name, m.Name, m.Value) {
					problems = append(problems, fmt.Sprintf("%s: %s has no series with %s=%q", x.where, name, m.Name, m.Value))
				}
			}
			return nil
		})
	}
	return problems
}

// pipeline is a real coordinator with one static target and a real scraper
// joined to it, remote-writing to a sink.
type pipeline struct {
	coordinator, scraper       *testenv.Process
	coordinatorWeb, scraperWeb string
	writes                     *atomic.Int64
}

// startPipeline starts the pipeline and waits until the target is scraped
// and samples were sent. The target is a synthetic node_exporter (the
// source document's node metrics) carrying the source document's ip label;
// the remote-write sink stores what the worker sends in st.
func startPipeline(t *testing.T, st *store, remoteWriteURLs ...string) *pipeline {
	t.Helper()
	dir := t.TempDir()

	target := httptest.NewServer(synth.New(synth.Options{Kind: synth.KindNode, Series: 400, Seed: 1}))
	t.Cleanup(target.Close)
	pl := &pipeline{writes: &atomic.Int64{}}
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := remote.DecodeWriteRequest(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		app := st.db.Appender(context.Background())
		for _, ts := range req.Timeseries {
			b := labels.NewScratchBuilder(len(ts.Labels))
			for _, l := range ts.Labels {
				b.Add(l.Name, l.Value)
			}
			b.Sort()
			for _, smp := range ts.Samples {
				// Out of order or duplicate after a retry: keep the first.
				_, _ = app.Append(0, b.Labels(), smp.Timestamp, smp.Value)
			}
		}
		if err := app.Commit(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		pl.writes.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(sink.Close)

	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`%s
scrape_configs:
  - job_name: node-exporter
    static_configs:
      - targets: [%q]
        labels: {ip: 10.0.0.1}
`, baseGlobal(t), strings.TrimPrefix(target.URL, "http://"))), 0o600))

	addr := func() string {
		a, err := testenv.FreeAddr()
		require.NoError(t, err)
		return a
	}
	var coordGRPC string
	pl.coordinatorWeb, coordGRPC, pl.scraperWeb = addr(), addr(), addr()
	pl.coordinator = testenv.NewProcess(t, command("coordinator"),
		"--config.file="+cfg, "--web.listen-address="+pl.coordinatorWeb, "--grpc.listen-address="+coordGRPC,
		"--storage.path="+filepath.Join(dir, "coordinator"), "--cluster.name=test",
		"--lease.ttl=3s", "--discovery.update-interval=100ms")
	require.NoError(t, pl.coordinator.Start())
	args := []string{
		"--coordinator.address=" + coordGRPC, "--worker.id=scraper-0", "--web.listen-address=" + pl.scraperWeb,
		"--storage.path=" + filepath.Join(dir, "scraper"), "--remote-write.url=" + sink.URL,
		"--scrape.discovery-reload-interval=50ms",
		// Alone, the worker has nobody to hand its target to: a drained
		// Leave would wait for --shutdown.handoff-timeout.
		"--no-shutdown.leave",
	}
	for _, u := range remoteWriteURLs {
		args = append(args, "--remote-write.url="+u)
	}
	pl.scraper = testenv.NewProcess(t, command("scraper"), args...)
	require.NoError(t, pl.scraper.Start())

	require.Eventually(t, func() bool {
		cms, sms, ok := pl.metrics(t)
		if !ok {
			return false
		}
		assigned, _ := cms.Sum("shardscrape_coordinator_targets_assigned", nil)
		active, _ := sms.Sum("shardscrape_scraper_targets", map[string]string{"state": "active"})
		sent, _ := sms.Sum("prometheus_remote_storage_samples_total", nil)
		return assigned == 1 && active == 1 && sent > 0 && pl.writes.Load() > 0
	}, 90*time.Second, 100*time.Millisecond, "the pipeline never scraped its target and remote-wrote it")
	return pl
}

// baseGlobal returns the global section of base/config/prometheus.yml
// (what the deployed fleet scrapes with: extra_scrape_metrics among it, which
// the pipeline dashboard's scrape duration panel needs), with the test's 1 s
// interval and timeout.
func baseGlobal(t *testing.T) string {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(deployDir(t), "base/config/prometheus.yml"))
	require.NoError(t, err)
	var cfg struct {
		Global map[string]any `yaml:"global"`
	}
	require.NoError(t, yaml.Unmarshal(text, &cfg))
	require.NotEmpty(t, cfg.Global)
	cfg.Global["scrape_interval"] = "1s"
	cfg.Global["scrape_timeout"] = "1s"
	out, err := yaml.Marshal(map[string]any{"global": cfg.Global})
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}

// metrics scrapes both /metrics pages (the scraper's only while it runs);
// ok is false when one that should answer did not.
func (pl *pipeline) metrics(t *testing.T) (coord, scraper testenv.MetricSet, ok bool) {
	t.Helper()
	require.True(t, pl.coordinator.Running(), "coordinator exited:\n%s", pl.coordinator.Logs())
	get := func(addr string) (testenv.MetricSet, bool) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		ms, err := testenv.Metrics(ctx, "http://"+addr+"/metrics")
		return ms, err == nil
	}
	if coord, ok = get(pl.coordinatorWeb); !ok {
		return nil, nil, false
	}
	if pl.scraper.Running() {
		if scraper, ok = get(pl.scraperWeb); !ok {
			return nil, nil, false
		}
	}
	return coord, scraper, true
}

// store is a TSDB holding the binaries' /metrics as a monitoring
// Prometheus would: with job, instance and the cluster label.
type store struct {
	db     *teststorage.TestStorage
	engine *promql.Engine
}

func newStore(t *testing.T) *store {
	return &store{
		db: teststorage.New(t),
		engine: promql.NewEngine(promql.EngineOpts{
			MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, Parser: promqlParser,
		}),
	}
}

// add appends one scrape of a binary at ts.
func (s *store) add(t *testing.T, ms testenv.MetricSet, job, instance, pod string, ts time.Time) {
	t.Helper()
	app := s.db.Appender(t.Context())
	for _, m := range ms {
		b := labels.NewBuilder(m.Labels)
		b.Set("job", job)
		b.Set("instance", instance)
		// What the kubernetes-pods job adds: the pod's name.
		b.Set("kubernetes_pod_name", pod)
		b.Set(clusterLabel, "test")
		_, err := app.Append(0, b.Labels(), ts.UnixMilli(), m.Value)
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
}

// snapshot scrapes both binaries into the store at the current time.
func (s *store) snapshot(t *testing.T, pl *pipeline) (time.Time, testenv.MetricSet, testenv.MetricSet) {
	t.Helper()
	var cms, sms testenv.MetricSet
	require.Eventually(t, func() bool {
		var ok bool
		cms, sms, ok = pl.metrics(t)
		return ok
	}, 30*time.Second, 50*time.Millisecond)
	now := time.Now()
	s.add(t, cms, "shardscrape-coordinator", pl.coordinatorWeb, "shardscrape-coordinator-0", now)
	if sms != nil {
		s.add(t, sms, "shardscrape-scraper", pl.scraperWeb, "scraper-0", now)
	}
	return now, cms, sms
}

var grafanaVarValueRe = regexp.MustCompile(`__grafana_var_(\w+?)__`)

// eval runs an instant query; Grafana variables take their value in vars,
// else select everything (All).
func (s *store) eval(t *testing.T, x expression, ts time.Time, vars ...map[string]string) promql.Vector {
	t.Helper()
	expr := grafanaVarValueRe.ReplaceAllStringFunc(x.expr, func(m string) string {
		name := grafanaVarValueRe.FindStringSubmatch(m)[1]
		for _, vs := range vars {
			if v, ok := vs[name]; ok {
				return v
			}
		}
		return ".*"
	})
	q, err := s.engine.NewInstantQuery(t.Context(), s.db, nil, expr, ts)
	require.NoError(t, err, "%s: %s", x.where, expr)
	defer q.Close()
	res := q.Exec(t.Context())
	require.NoError(t, res.Err, "%s: %s", x.where, expr)
	switch v := res.Value.(type) {
	case promql.Vector:
		return v
	case promql.Scalar:
		return promql.Vector{{T: v.T, F: v.V}}
	default:
		t.Fatalf("%s: %s: result %T", x.where, expr, res.Value)
		return nil
	}
}

// alertExpressions returns each alert's expression by name.
func alertExpressions(t *testing.T) map[string]expression {
	t.Helper()
	out := map[string]expression{}
	for _, file := range ruleFiles(t) {
		groups, err := loadRules(file)
		require.NoError(t, err)
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Alert != "" {
					out[r.Alert] = expression{where: file + ": " + r.Alert, expr: r.Expr, rule: true, alert: true}
				}
			}
		}
	}
	return out
}

// TestMonitoringMetricsExposed runs the real coordinator and scraper and
// checks every metric the rules and dashboards use against their /metrics,
// then evaluates the rules and panels on what they expose: every
// expression evaluates, every pipeline panel shows data, no alert fires on
// the healthy pipeline, and the worker-down alerts fire once the worker is
// killed.
func TestMonitoringMetricsExposed(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the coordinator and scraper binaries")
	}
	exprs, recorded := ruleExpressions(t)
	pipelineTargets := map[string]bool{}
	for _, file := range dashboardFiles(t) {
		for _, x := range dashboardExpressions(t, file) {
			exprs = append(exprs, x)
			if filepath.Base(file) == "shardscrape-pipeline.json" && strings.Contains(x.where, " target ") {
				pipelineTargets[x.where] = true
			}
		}
	}
	require.NotEmpty(t, pipelineTargets)
	st := newStore(t)
	// VictoriaMetrics, the source document's store, receives the same
	// remote write: every expression must run there too.
	vm := testenv.StartVictoriaMetrics(t)
	pl := startPipeline(t, st, vm.WriteURL())
	// What the worker wrote: two samples of the node, for rate().
	require.Eventually(t, func() bool {
		return len(st.eval(t, expression{where: "node samples", expr: `count_over_time(node_uname_info{ip="10.0.0.1", cluster_name="test"}[5m]) >= 2`}, time.Now())) == 1
	}, 60*time.Second, 100*time.Millisecond, "the worker never wrote the node's samples twice")

	// Two scrapes of each binary, so that rate() has two samples.
	_, _, first := st.snapshot(t, pl)
	firstScrapes, _ := first.Sum("prometheus_target_interval_length_seconds_count", nil)
	require.Eventually(t, func() bool {
		_, sms, ok := pl.metrics(t)
		n, _ := sms.Sum("prometheus_target_interval_length_seconds_count", nil)
		return ok && n > firstScrapes
	}, 30*time.Second, 100*time.Millisecond)
	ts, cms, sms := st.snapshot(t, pl)
	coord, scraper := newExposition(cms), newExposition(sms)

	require.Empty(t, unexposedMetrics(exprs, coord, scraper, recorded))
	checkLazyMetrics(t, scraper)
	// The pipeline dashboard's scrape duration panel: the histogram is
	// registered always, observed only with extra_scrape_metrics, which the
	// pipeline takes from the base config's global section.
	scrapes, _ := sms.Sum("prometheus_target_scrape_duration_seconds_count", nil)
	require.Positive(t, scrapes, "prometheus_target_scrape_duration_seconds is not observed: extra_scrape_metrics off in base/config/prometheus.yml?")

	t.Run("evaluate", func(t *testing.T) {
		for _, x := range exprs {
			v := st.eval(t, x, ts)
			switch {
			case x.alert:
				require.Empty(t, v, "%s fires on a healthy pipeline: %s", x.where, x.expr)
			case x.rule:
				require.NotEmpty(t, v, "%s records nothing on a running pipeline: %s", x.where, x.expr)
			case pipelineTargets[x.where] && !usesBucketsOrLazy(x.expr):
				require.NotEmpty(t, v, "%s: no data from the running pipeline: %s", x.where, x.expr)
			case onlyNodeMetrics(x.expr):
				// The source document's node queries, on what the worker
				// wrote for a node_exporter target.
				require.NotEmpty(t, v, "%s: no data from the node the pipeline scraped: %s", x.where, x.expr)
			}
		}
	})

	t.Run("victoriametrics", func(t *testing.T) {
		// MetricsQL runs every expression; the node queries have data from
		// what the worker wrote (rate needs two samples of each series).
		vmQuery := func(x expression) (model.Vector, error) {
			expr := grafanaVarValueRe.ReplaceAllString(x.expr, ".*")
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			v, _, _, err := vm.API().Query(ctx, expr, time.Now())
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", x.where, expr, err)
			}
			switch v := v.(type) {
			case model.Vector:
				return v, nil
			case *model.Scalar:
				return model.Vector{{Value: v.Value}}, nil
			}
			return nil, fmt.Errorf("%s: %s: result %s", x.where, expr, v.Type())
		}
		for _, x := range exprs {
			_, err := vmQuery(x)
			require.NoError(t, err)
		}
		_, err := vmQuery(expression{where: "broken", expr: "sum(rate(up[5m]) >"})
		require.Error(t, err, "VictoriaMetrics accepts a broken query: the check above proves nothing")
		require.Eventually(t, func() bool {
			if err := vm.ForceFlush(t.Context()); err != nil {
				return false
			}
			for _, x := range exprs {
				if !onlyNodeMetrics(x.expr) {
					continue
				}
				if v, err := vmQuery(x); err != nil || len(v) == 0 {
					return false
				}
			}
			return true
		}, 60*time.Second, 500*time.Millisecond, "node queries without data in VictoriaMetrics")
	})

	t.Run("unknown names are reported", func(t *testing.T) {
		bad := []expression{
			{where: "made-up", expr: `rate(shardscrape_coordinator_no_such_thing_total[5m]) > 0`},
			{where: "made-up label value", expr: `shardscrape_coordinator_workers{state="WORKER_STATE_ZOMBIE"} > 0`},
			{where: "made-up histogram", expr: `histogram_quantile(0.9, rate(shardscrape_scraper_targets_bucket[5m]))`},
			{where: "made-up prometheus", expr: `prometheus_remote_storage_no_such_thing`},
			{where: "not recorded", expr: `shardscrape:no_such:ratio`},
		}
		if name := coordinatorOnlyPrometheusMetric(coord, scraper); name != "" {
			bad = append(bad, expression{where: "coordinator only", expr: name})
		}
		problems := unexposedMetrics(bad, coord, scraper, recorded)
		require.Len(t, problems, len(bad), "%q", problems)
		for i, p := range problems {
			require.True(t, strings.HasPrefix(p, bad[i].where+":"), "%s", p)
		}
		good := []expression{
			{where: "histogram bucket", expr: `histogram_quantile(0.9, rate(shardscrape_coordinator_assignment_latency_seconds_bucket[5m]))`},
			{where: "label value", expr: `shardscrape_scraper_targets{state="incoming", cluster_name="x"}`},
			{where: "recorded", expr: `shardscrape:coverage:ratio < 1`},
			{where: "other", expr: `up == 0`},
		}
		require.Empty(t, unexposedMetrics(good, coord, scraper, recorded))
	})

	t.Run("worker killed", func(t *testing.T) {
		// SIGKILL: no Leave, so the lease expires and the target is left
		// without an owner.
		require.NoError(t, pl.scraper.Kill())
		require.Eventually(t, func() bool {
			cms, _, ok := pl.metrics(t)
			expired, _ := cms.Sum("shardscrape_coordinator_workers", map[string]string{"state": "WORKER_STATE_EXPIRED"})
			unassigned, _ := cms.Sum("shardscrape_coordinator_targets_unassigned", nil)
			return ok && expired == 1 && unassigned == 1
		}, 60*time.Second, 100*time.Millisecond)
		ts, _, _ := st.snapshot(t, pl)
		alerts := alertExpressions(t)
		for _, name := range []string{"ShardscrapeWorkerDown", "ShardscrapeTargetsUnassigned", "ShardscrapeCoverageLow"} {
			x, ok := alerts[name]
			require.True(t, ok, name)
			v := st.eval(t, x, ts)
			require.Len(t, v, 1, "%s does not fire with the only worker killed", name)
			require.Equal(t, "test", v[0].Metric.Get(clusterLabel), name)
		}
		require.Empty(t, st.eval(t, alerts["ShardscrapeCoordinatorNoLeader"], ts))
	})
}

// onlyNodeMetrics reports whether every selector of expr reads a
// node_exporter metric or up.
func onlyNodeMetrics(expr string) bool {
	e, err := promqlParser.ParseExpr(expr)
	if err != nil {
		return false
	}
	n := 0
	only := true
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			n++
			only = only && (strings.HasPrefix(vs.Name, "node_") || vs.Name == "up")
		}
		return nil
	})
	return n > 0 && only
}

// usesBucketsOrLazy reports whether expr reads classic histogram buckets
// (testenv.Metrics gives only _sum and _count) or a lazily created metric:
// a panel may be empty on a fresh pipeline then.
func usesBucketsOrLazy(expr string) bool {
	if strings.Contains(expr, "_bucket") {
		return true
	}
	for name := range lazyMetrics {
		if strings.Contains(expr, name) {
			return true
		}
	}
	return false
}

// coordinatorOnlyPrometheusMetric returns a prometheus_* name the
// coordinator exposes and the scraper does not (discovery runs in both, so
// there may be none).
func coordinatorOnlyPrometheusMetric(coord, scraper exposition) string {
	for n := range coord.names {
		if strings.HasPrefix(n, "prometheus_") && !scraper.has(n) {
			return n
		}
	}
	return ""
}

// checkLazyMetrics: every lazily created metric is still declared where
// lazyMetrics says, and is indeed not exposed yet (else it needs no entry).
func checkLazyMetrics(t *testing.T, scraper exposition) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/prometheus/prometheus").Output()
	require.NoError(t, err)
	dir := strings.TrimSpace(string(out))
	for name, decl := range lazyMetrics {
		src, err := os.ReadFile(filepath.Join(dir, decl.file))
		require.NoError(t, err, name)
		require.Contains(t, string(src), decl.name, "%s: no longer declared in prometheus/%s", name, decl.file)
		require.False(t, scraper.has(name), "%s is exposed from the start now: drop it from lazyMetrics", name)
	}
}

// TestMonitoringAlertsFire evaluates every alert on series written as a
// monitoring store holds them for two clusters, one healthy ("ok") and one
// not ("bad"): each alert fires for the bad one only, with the labels its
// annotations use. Every alert of the rule files must have a case.
func TestMonitoringAlertsFire(t *testing.T) {
	// Series per case, in promqltest's load syntax at a 1m step, 40 points.
	cases := map[string]struct {
		load string
		want []map[string]string // label subsets of the firing series
	}{
		"ShardscrapeCoordinatorNoLeader": {load: `
			shardscrape_coordinator_leader{cluster_name="bad", kubernetes_pod_name="c0"} 0x40
			shardscrape_coordinator_leader{cluster_name="bad", kubernetes_pod_name="c1"} 0x40
			shardscrape_coordinator_leader{cluster_name="ok", kubernetes_pod_name="c0"} 1x40
			shardscrape_coordinator_leader{cluster_name="ok", kubernetes_pod_name="c1"} 0x40`,
			want: []map[string]string{{"cluster_name": "bad"}}},
		"ShardscrapeCoordinatorSplitLeaders": {load: `
			shardscrape_coordinator_leader{cluster_name="bad", kubernetes_pod_name="c0"} 1x40
			shardscrape_coordinator_leader{cluster_name="bad", kubernetes_pod_name="c1"} 1x40
			shardscrape_coordinator_leader{cluster_name="ok", kubernetes_pod_name="c0"} 1x40
			shardscrape_coordinator_leader{cluster_name="ok", kubernetes_pod_name="c1"} 0x40`,
			want: []map[string]string{{"cluster_name": "bad"}}},
		"ShardscrapeWorkersLostCoordinator": {load: `
			shardscrape_scraper_coordinator_connected{cluster_name="bad", kubernetes_pod_name="w0"} 0x40
			shardscrape_scraper_coordinator_connected{cluster_name="bad", kubernetes_pod_name="w1"} 0x40
			shardscrape_scraper_coordinator_connected{cluster_name="ok", kubernetes_pod_name="w0"} 1x40
			shardscrape_scraper_coordinator_connected{cluster_name="ok", kubernetes_pod_name="w1"} 0x40`,
			want: []map[string]string{{"cluster_name": "bad"}}},
		"ShardscrapeCoordinatorConfigReloadFailed": {load: `
			shardscrape_coordinator_config_last_reload_successful{cluster_name="bad", kubernetes_pod_name="c0"} 0x40
			shardscrape_coordinator_config_last_reload_successful{cluster_name="ok", kubernetes_pod_name="c0"} 1x40`,
			want: []map[string]string{{"cluster_name": "bad", "kubernetes_pod_name": "c0"}}},
		"ShardscrapeTargetsUnassigned": {load: `
			shardscrape_coordinator_targets_unassigned{cluster_name="bad", kubernetes_pod_name="c0"} 3x40
			shardscrape_coordinator_targets_unassigned{cluster_name="ok", kubernetes_pod_name="c0"} 0x40`,
			want: []map[string]string{{"cluster_name": "bad"}}},
		"ShardscrapeCoverageLow": {load: `
			shardscrape_coordinator_targets_assigned{cluster_name="bad", kubernetes_pod_name="c0"} 90x40
			shardscrape_coordinator_targets_unassigned{cluster_name="bad", kubernetes_pod_name="c0"} 10x40
			shardscrape_coordinator_targets_assigned{cluster_name="ok", kubernetes_pod_name="c0"} 99x40
			shardscrape_coordinator_targets_unassigned{cluster_name="ok", kubernetes_pod_name="c0"} 1x40`,
			want: []map[string]string{{"cluster_name": "bad"}}},
		"ShardscrapeTargetsOwnedTwice": {load: `
			shardscrape_coordinator_targets_owned_twice{cluster_name="bad", kubernetes_pod_name="c0"} 2x40
			shardscrape_coordinator_targets_owned_twice{cluster_name="ok", kubernetes_pod_name="c0"} 0x40`,
			want: []map[string]string{{"cluster_name": "bad"}}},
		"ShardscrapeHandoffTimeouts": {load: `
			shardscrape_coordinator_handoffs_started_total{cluster_name="bad", kubernetes_pod_name="c0"} 0+10x40
			shardscrape_coordinator_handoffs_timed_out_total{cluster_name="bad", kubernetes_pod_name="c0"} 0+5x40
			shardscrape_coordinator_handoffs_started_total{cluster_name="ok", kubernetes_pod_name="c0"} 0+10x40
			shardscrape_coordinator_handoffs_timed_out_total{cluster_name="ok", kubernetes_pod_name="c0"} 0x40`,
			want: []map[string]string{{"cluster_name": "bad"}}},
		"ShardscrapeRingImbalance": {load: `
			shardscrape_coordinator_worker_targets{cluster_name="bad", kubernetes_pod_name="c0", worker="w0"} 100x40
			shardscrape_coordinator_worker_targets{cluster_name="bad", kubernetes_pod_name="c0", worker="w1"} 100x40
			shardscrape_coordinator_worker_targets{cluster_name="bad", kubernetes_pod_name="c0", worker="w2"} 400x40
			shardscrape_coordinator_worker_targets{cluster_name="ok", kubernetes_pod_name="c0", worker="w0"} 100x40
			shardscrape_coordinator_worker_targets{cluster_name="ok", kubernetes_pod_name="c0", worker="w1"} 110x40`,
			want: []map[string]string{{"cluster_name": "bad"}}},
		// bad: one of 5 wanted workers expired; bad-no-ksm: the same
		// without kube-state-metrics; ok: none expired; ok-scaled-down: a
		// worker removed by a scale-down whose Leave failed stays EXPIRED,
		// but all 4 wanted workers are live.
		"ShardscrapeWorkerDown": {load: `
			shardscrape_coordinator_workers{cluster_name="bad", kubernetes_pod_name="c0", state="WORKER_STATE_EXPIRED"} 1x40
			shardscrape_coordinator_workers{cluster_name="bad", kubernetes_pod_name="c0", state="WORKER_STATE_ACTIVE"} 4x40
			kube_statefulset_replicas{cluster_name="bad", namespace="shardscrape", statefulset="shardscrape-scraper"} 5x40
			shardscrape_coordinator_workers{cluster_name="bad-no-ksm", kubernetes_pod_name="c0", state="WORKER_STATE_EXPIRED"} 1x40
			shardscrape_coordinator_workers{cluster_name="bad-no-ksm", kubernetes_pod_name="c0", state="WORKER_STATE_ACTIVE"} 4x40
			shardscrape_coordinator_workers{cluster_name="ok", kubernetes_pod_name="c0", state="WORKER_STATE_EXPIRED"} 0x40
			shardscrape_coordinator_workers{cluster_name="ok", kubernetes_pod_name="c0", state="WORKER_STATE_ACTIVE"} 5x40
			kube_statefulset_replicas{cluster_name="ok", namespace="shardscrape", statefulset="shardscrape-scraper"} 5x40
			shardscrape_coordinator_workers{cluster_name="ok-scaled-down", kubernetes_pod_name="c0", state="WORKER_STATE_EXPIRED"} 1x40
			shardscrape_coordinator_workers{cluster_name="ok-scaled-down", kubernetes_pod_name="c0", state="WORKER_STATE_ACTIVE"} 3x40
			shardscrape_coordinator_workers{cluster_name="ok-scaled-down", kubernetes_pod_name="c0", state="WORKER_STATE_DRAINED"} 1x40
			kube_statefulset_replicas{cluster_name="ok-scaled-down", namespace="shardscrape", statefulset="shardscrape-scraper"} 4x40`,
			want: []map[string]string{{"cluster_name": "bad"}, {"cluster_name": "bad-no-ksm"}}},
		"ShardscrapeWorkersMissing": {load: `
			kube_statefulset_replicas{cluster_name="bad", namespace="shardscrape", statefulset="shardscrape-scraper"} 5x40
			kube_statefulset_status_replicas_ready{cluster_name="bad", namespace="shardscrape", statefulset="shardscrape-scraper"} 3x40
			kube_statefulset_replicas{cluster_name="ok", namespace="shardscrape", statefulset="shardscrape-scraper"} 5x40
			kube_statefulset_status_replicas_ready{cluster_name="ok", namespace="shardscrape", statefulset="shardscrape-scraper"} 5x40
			kube_statefulset_replicas{cluster_name="bad", namespace="shop", statefulset="web"} 5x40
			kube_statefulset_status_replicas_ready{cluster_name="bad", namespace="shop", statefulset="web"} 0x40`,
			want: []map[string]string{{"cluster_name": "bad", "statefulset": "shardscrape-scraper"}}},
		// bad: its workers stopped reporting at minute 20; ok: still there;
		// gone: stopped more than 6 hours before (not loaded at all).
		"ShardscrapeFleetAbsent": {load: `
			shardscrape_scraper_ready{cluster_name="bad", kubernetes_pod_name="w0"} 1x20
			shardscrape_scraper_ready{cluster_name="bad", kubernetes_pod_name="w1"} 1x20
			shardscrape_scraper_ready{cluster_name="ok", kubernetes_pod_name="w0"} 1x20
			shardscrape_scraper_ready{cluster_name="ok", kubernetes_pod_name="w1"} 1x40`,
			want: []map[string]string{{"cluster_name": "bad"}}},
		"ShardscrapeWorkerLeasesExpiring": {load: `
			shardscrape_coordinator_lease_expiries_total{cluster_name="bad", kubernetes_pod_name="c0"} 0+1x40
			shardscrape_coordinator_lease_expiries_total{cluster_name="ok", kubernetes_pod_name="c0"} 0x40`,
			want: []map[string]string{{"cluster_name": "bad"}}},
		"ShardscrapeWorkerNotReady": {load: `
			shardscrape_scraper_ready{cluster_name="bad", kubernetes_pod_name="w0"} 0x40
			shardscrape_scraper_ready{cluster_name="bad", kubernetes_pod_name="w1"} 1x40
			shardscrape_scraper_ready{cluster_name="ok", kubernetes_pod_name="w0"} 1x40`,
			want: []map[string]string{{"cluster_name": "bad", "kubernetes_pod_name": "w0"}}},
		"ShardscrapeWorkerDisconnected": {load: `
			shardscrape_scraper_coordinator_connected{cluster_name="bad", kubernetes_pod_name="w0"} 0x40
			shardscrape_scraper_coordinator_connected{cluster_name="bad", kubernetes_pod_name="w1"} 1x40
			shardscrape_scraper_coordinator_connected{cluster_name="ok", kubernetes_pod_name="w0"} 1x40`,
			want: []map[string]string{{"cluster_name": "bad", "kubernetes_pod_name": "w0"}}},
		"ShardscrapeWorkerConfigErrors": {load: `
			shardscrape_scraper_config_errors_total{cluster_name="bad", kubernetes_pod_name="w0"} 0+1x40
			shardscrape_scraper_config_errors_total{cluster_name="ok", kubernetes_pod_name="w0"} 2x40`,
			want: []map[string]string{{"cluster_name": "bad", "kubernetes_pod_name": "w0"}}},
		"ShardscrapeRemoteWriteBehind": {load: `
			prometheus_remote_storage_highest_timestamp_in_seconds{cluster_name="bad", kubernetes_pod_name="w0", job="s"} 10000+60x40
			prometheus_remote_storage_queue_highest_sent_timestamp_seconds{cluster_name="bad", kubernetes_pod_name="w0", job="s", remote_name="vm", url="http://vm"} 10000x40
			prometheus_remote_storage_highest_timestamp_in_seconds{cluster_name="ok", kubernetes_pod_name="w0", job="s"} 10000+60x40
			prometheus_remote_storage_queue_highest_sent_timestamp_seconds{cluster_name="ok", kubernetes_pod_name="w0", job="s", remote_name="vm", url="http://vm"} 9990+60x40`,
			want: []map[string]string{{"cluster_name": "bad", "kubernetes_pod_name": "w0", "remote_name": "vm", "url": "http://vm"}}},
		"ShardscrapeRemoteWriteFailed": {load: `
			prometheus_remote_storage_samples_failed_total{cluster_name="bad", kubernetes_pod_name="w0", remote_name="vm", url="http://vm"} 0+100x40
			prometheus_remote_storage_histograms_failed_total{cluster_name="bad", kubernetes_pod_name="w0", remote_name="vm", url="http://vm"} 0x40
			prometheus_remote_storage_samples_failed_total{cluster_name="ok", kubernetes_pod_name="w0", remote_name="vm", url="http://vm"} 0x40
			prometheus_remote_storage_histograms_failed_total{cluster_name="ok", kubernetes_pod_name="w0", remote_name="vm", url="http://vm"} 0x40`,
			want: []map[string]string{{"cluster_name": "bad", "kubernetes_pod_name": "w0", "remote_name": "vm", "url": "http://vm"}}},
		"ShardscrapeRemoteWriteDropped": {load: `
			prometheus_remote_storage_samples_dropped_total{cluster_name="bad", kubernetes_pod_name="w0", remote_name="vm", url="http://vm", reason="too_old"} 0+10x40`,
			want: []map[string]string{{"cluster_name": "bad", "kubernetes_pod_name": "w0", "remote_name": "vm"}}},
		"ShardscrapeScrapeSampleLimit": {load: `
			prometheus_target_scrapes_exceeded_sample_limit_total{cluster_name="bad", kubernetes_pod_name="w0"} 0+1x40
			prometheus_target_scrapes_exceeded_body_size_limit_total{cluster_name="bad", kubernetes_pod_name="w0"} 0x40
			prometheus_target_scrapes_exceeded_native_histogram_bucket_limit_total{cluster_name="bad", kubernetes_pod_name="w0"} 0x40
			prometheus_target_scrapes_exceeded_sample_limit_total{cluster_name="ok", kubernetes_pod_name="w0"} 0x40
			prometheus_target_scrapes_exceeded_body_size_limit_total{cluster_name="ok", kubernetes_pod_name="w0"} 0x40
			prometheus_target_scrapes_exceeded_native_histogram_bucket_limit_total{cluster_name="ok", kubernetes_pod_name="w0"} 0x40`,
			want: []map[string]string{{"cluster_name": "bad", "kubernetes_pod_name": "w0"}}},
		"ShardscrapeScrapeSamplesRejected": {load: `
			prometheus_target_scrapes_sample_out_of_order_total{cluster_name="bad", kubernetes_pod_name="w0"} 0x40
			prometheus_target_scrapes_sample_duplicate_timestamp_total{cluster_name="bad", kubernetes_pod_name="w0"} 0+7x40
			prometheus_target_scrapes_sample_out_of_bounds_total{cluster_name="bad", kubernetes_pod_name="w0"} 0x40
			prometheus_target_scrapes_sample_out_of_order_total{cluster_name="ok", kubernetes_pod_name="w0"} 0x40
			prometheus_target_scrapes_sample_duplicate_timestamp_total{cluster_name="ok", kubernetes_pod_name="w0"} 0x40
			prometheus_target_scrapes_sample_out_of_bounds_total{cluster_name="ok", kubernetes_pod_name="w0"} 0x40`,
			want: []map[string]string{{"cluster_name": "bad", "kubernetes_pod_name": "w0"}}},
	}

	var rules []rulefmt.Rule
	for _, file := range ruleFiles(t) {
		groups, err := loadRules(file)
		require.NoError(t, err)
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Alert != "" {
					rules = append(rules, r)
				}
			}
		}
	}
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, Parser: promqlParser})
	for _, r := range rules {
		t.Run(r.Alert, func(t *testing.T) {
			c, ok := cases[r.Alert]
			require.True(t, ok, "no case for alert %s", r.Alert)
			var load strings.Builder
			load.WriteString("load 1m\n")
			for line := range strings.SplitSeq(c.load, "\n") {
				if line = strings.TrimSpace(line); line != "" {
					load.WriteString("  " + line + "\n")
				}
			}
			st := promqltest.LoadedStorage(t, load.String())
			// Firing for its whole for: duration, ending at the last point.
			end := time.Unix(0, 0).Add(39 * time.Minute)
			start := end.Add(-time.Duration(r.For))
			q, err := engine.NewRangeQuery(t.Context(), st, nil, r.Expr, start, end, time.Minute)
			require.NoError(t, err)
			defer q.Close()
			res := q.Exec(t.Context())
			require.NoError(t, res.Err)
			m, err := res.Matrix()
			require.NoError(t, err)
			require.Len(t, m, len(c.want), "%s: %v", r.Expr, m)
			steps := int(end.Sub(start)/time.Minute) + 1
			for i, want := range c.want {
				for n, v := range want {
					require.Equal(t, v, m[i].Metric.Get(n), "%s: label %s of %s", r.Alert, n, m[i].Metric)
				}
				require.Len(t, m[i].Floats, steps, "%s: not firing at every step of its for: %s", r.Alert, m[i].Metric)
			}
		})
	}
	for name := range cases {
		require.True(t, slices.ContainsFunc(rules, func(r rulefmt.Rule) bool { return r.Alert == name }), "case %s: no such alert", name)
	}
}

// kubernetesFixture is one cluster, one node and one pod as node_exporter
// (with the source document's ip label), kube-state-metrics v2, cAdvisor,
// etcd and the API server expose them, in promqltest's load syntax at a
// 1m step.
const kubernetesFixture = `
load 1m
  up{cluster_name="c1", job="kubernetes-nodes", instance="node-1"} 1x10
  node_uname_info{cluster_name="c1", ip="10.0.0.1", instance="10.0.0.1:9100", nodename="node-1"} 1x10
  node_cpu_seconds_total{cluster_name="c1", ip="10.0.0.1", cpu="0", mode="idle"} 0+50x10
  node_cpu_seconds_total{cluster_name="c1", ip="10.0.0.1", cpu="0", mode="system"} 0+10x10
  node_memory_MemTotal_bytes{cluster_name="c1", ip="10.0.0.1"} 1e10x10
  node_memory_MemFree_bytes{cluster_name="c1", ip="10.0.0.1"} 4e9x10
  node_memory_Cached_bytes{cluster_name="c1", ip="10.0.0.1"} 2e9x10
  node_filesystem_size_bytes{cluster_name="c1", ip="10.0.0.1", device="/dev/sdb1", fstype="xfs", mountpoint="/data"} 1e12x10
  node_filesystem_free_bytes{cluster_name="c1", ip="10.0.0.1", device="/dev/sdb1", fstype="xfs", mountpoint="/data"} 4e11x10
  node_disk_read_bytes_total{cluster_name="c1", ip="10.0.0.1", device="sdb"} 0+1e6x10
  node_disk_written_bytes_total{cluster_name="c1", ip="10.0.0.1", device="sdb"} 0+2e6x10
  node_disk_io_time_seconds_total{cluster_name="c1", ip="10.0.0.1", device="sdb"} 0+6x10
  kube_node_info{cluster_name="c1", job="kube-state-metrics", node="node-1", internal_ip="10.0.0.1", kernel_version="6.1"} 1x10
  kube_node_status_condition{cluster_name="c1", job="kube-state-metrics", node="node-1", condition="Ready", status="true"} 1x10
  kube_pod_info{cluster_name="c1", job="kube-state-metrics", namespace="shop", pod="web-0", uid="u1", node="node-1", host_ip="10.0.0.1", pod_ip="10.1.0.5", created_by_kind="StatefulSet"} 1x10
  kube_pod_status_phase{cluster_name="c1", job="kube-state-metrics", namespace="shop", pod="web-0", uid="u1", phase="Running"} 1x10
  kube_pod_status_phase{cluster_name="c1", job="kube-state-metrics", namespace="shop", pod="web-0", uid="u1", phase="Pending"} 0x10
  kube_pod_container_status_waiting_reason{cluster_name="c1", job="kube-state-metrics", namespace="shop", pod="web-0", uid="u1", container="sidecar", reason="CrashLoopBackOff"} 1x10
  kube_pod_container_status_restarts_total{cluster_name="c1", job="kube-state-metrics", namespace="shop", pod="web-0", uid="u1", container="sidecar"} 0+1x10
  kube_pod_container_resource_requests{cluster_name="c1", job="kube-state-metrics", namespace="shop", pod="web-0", uid="u1", container="web", node="node-1", resource="cpu", unit="core"} 0.5x10
  kube_pod_container_resource_requests{cluster_name="c1", job="kube-state-metrics", namespace="shop", pod="web-0", uid="u1", container="web", node="node-1", resource="memory", unit="byte"} 1e9x10
  container_cpu_usage_seconds_total{cluster_name="c1", job="kubernetes-cadvisor", instance="node-1", namespace="shop", pod="web-0", container="web", image="web:1"} 0+30x10
  container_memory_working_set_bytes{cluster_name="c1", job="kubernetes-cadvisor", instance="node-1", namespace="shop", pod="web-0", container="web", image="web:1"} 5e8x10
  etcd_server_has_leader{cluster_name="c1", job="etcd", instance="10.0.0.2:2379"} 1x10
  apiserver_request_total{cluster_name="c1", job="kubernetes-apiservers", instance="10.0.0.2:6443", code="200", verb="GET"} 0+100x10
  apiserver_request_total{cluster_name="c1", job="kubernetes-apiservers", instance="10.0.0.2:6443", code="500", verb="GET"} 0+1x10
`

// TestMonitoringKubernetesViews evaluates every query and variable of the
// cluster and node dashboards on kubernetesFixture: each returns data, so
// their joins (node IPs to node names through kube_node_info, pods to nodes
// through kube_pod_info) and label names match what the exporters expose.
func TestMonitoringKubernetesViews(t *testing.T) {
	st := &store{
		db:     promqltest.LoadedStorage(t, kubernetesFixture),
		engine: promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, Parser: promqlParser}),
	}
	at := time.Unix(0, 0).Add(9 * time.Minute)
	// All selected, and the one cluster, node and disk selected.
	selected := map[string]string{"cluster": "c1", "node": "10.0.0.1", "node_name": "node-1", "device": "sdb"}
	for _, file := range []string{"cluster.json", "node.json"} {
		for _, x := range dashboardExpressions(t, filepath.Join(dashboardsDir, file)) {
			require.NotEmpty(t, st.eval(t, x, at), "%s: no data from one node, one pod: %s", x.where, x.expr)
			require.NotEmpty(t, st.eval(t, x, at, selected), "%s: no data with %v selected: %s", x.where, selected, x.expr)
		}
	}
	// Another node selected: the node's panels are empty (or zero).
	other := map[string]string{"cluster": "c1", "node": "10.0.0.9", "node_name": "node-9", "device": "sdb"}
	for _, x := range dashboardExpressions(t, filepath.Join(dashboardsDir, "node.json")) {
		if strings.Contains(x.where, "variable") {
			continue
		}
		for _, smp := range st.eval(t, x, at, other) {
			require.Zero(t, smp.F, "%s: data of node 10.0.0.1 with node 10.0.0.9 selected: %s", x.where, x.expr)
		}
	}
	// Percentages stay percentages with several nodes and disks, each fully
	// used (a sum over devices or nodes would pass 100%).
	busy := &store{
		db: promqltest.LoadedStorage(t, `
load 1m
  node_disk_io_time_seconds_total{cluster_name="c1", ip="10.0.0.1", device="sda"} 0+60x10
  node_disk_io_time_seconds_total{cluster_name="c1", ip="10.0.0.1", device="sdb"} 0+60x10
  node_disk_io_time_seconds_total{cluster_name="c1", ip="10.0.0.2", device="sda"} 0+60x10
  node_disk_io_time_seconds_total{cluster_name="c1", ip="10.0.0.2", device="sdb"} 0+60x10
  node_cpu_seconds_total{cluster_name="c1", ip="10.0.0.1", cpu="0", mode="idle"} 0x10
  node_cpu_seconds_total{cluster_name="c1", ip="10.0.0.2", cpu="0", mode="idle"} 0x10
  up{cluster_name="c1", job="kubernetes-pods"} 1x10
`),
		engine: st.engine,
	}
	var percents int
	for _, file := range []string{"cluster.json", "node.json"} {
		for _, p := range allPanels(loadDashboard(t, filepath.Join(dashboardsDir, file)).Panels) {
			if p.FieldConfig.Defaults.Unit != "percentunit" {
				continue
			}
			for _, tg := range p.Targets {
				e, _ := grafanaExpr(tg.Expr)
				for _, smp := range busy.eval(t, expression{where: file + " " + p.Title, expr: e}, at) {
					percents++
					require.LessOrEqual(t, smp.F, 1.0, "%s: panel %q (percentunit) above 100%%: %s", file, p.Title, e)
				}
			}
		}
	}
	require.Positive(t, percents)
	// The hidden node_name variable maps the selected IPs to node names.
	v := st.eval(t, expression{where: "node_name", expr: `kube_node_info{cluster_name=~"c1", internal_ip=~"10.0.0.1"}`}, at)
	require.Len(t, v, 1)
	require.Equal(t, "node-1", v[0].Metric.Get("node"))
}
