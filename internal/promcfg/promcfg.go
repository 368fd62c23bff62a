// Package promcfg splits a user's prometheus.yml into the parts the
// assignment stream carries (proto/shardscrape/v1: GlobalConfig and one
// ScrapeConfig per job) and rebuilds a *config.Config from them on the
// worker, exactly as the contract describes: Prometheus's config.Load on the
// global text with every job's text under scrape_configs, then
// SetDirectory, so that global defaults (interval, timeout, limits) apply as
// they would in Prometheus.
//
// Both directions work on the original text, read as YAML nodes that keep
// every scalar as written: Prometheus marshals secrets as "<secret>", so a
// remarshaled *config.Config would lose credentials, and a scalar decoded
// to a Go value would change text Prometheus reads as a string (a label
// value 010 would become 8, 1.10 would become 1.1, a password yes true).
package promcfg

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/prometheus/common/config"
	// Every service discovery Prometheus has, so that any config parses.
	promconfig "github.com/prometheus/prometheus/config"
	_ "github.com/prometheus/prometheus/discovery/install"
	"github.com/prometheus/prometheus/model/labels"
	"go.yaml.in/yaml/v3"
)

// Top-level keys of prometheus.yml that the global part leaves out: the
// scrape configs travel one per job, and the rest is no business of a
// scraping worker.
var globalExcluded = map[string]bool{
	"scrape_configs":      true,
	"scrape_config_files": true,
	"rule_files":          true,
	"alerting":            true,
	"remote_read":         true,
}

// Global is the non-scrape part of a configuration (GlobalConfig in the
// contract).
type Global struct {
	// YAML is the user's prometheus.yml without the keys in the package
	// comment, with original values (secrets included).
	YAML []byte
	// Dir is the directory of the config file; relative paths in the global
	// part and in jobs without a Dir of their own resolve against it.
	Dir string
	// ExternalLabels override same-named global.external_labels (the
	// coordinator's cluster label).
	ExternalLabels labels.Labels
}

// Hash returns the content hash of g (GlobalConfig.hash): every field.
func (g Global) Hash() string {
	h := sha256.New()
	writeField(h, g.YAML)
	writeField(h, []byte(g.Dir))
	g.ExternalLabels.Range(func(l labels.Label) {
		writeField(h, []byte(l.Name))
		writeField(h, []byte(l.Value))
	})
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Job is one scrape_configs element (ScrapeConfig in the contract).
type Job struct {
	// Name is the element's job_name.
	Name string
	// Hash is JobHash(YAML, Dir).
	Hash string
	// YAML is the element's original text, marshaled on its own.
	YAML []byte
	// Dir is the directory of the scrape_config_files file the element came
	// from; empty for elements of the main file.
	Dir string
}

// JobHash returns the content hash of a scrape config element and its
// directory (ScrapeConfig.hash).
func JobHash(yamlText []byte, dir string) string {
	h := sha256.New()
	writeField(h, yamlText)
	writeField(h, []byte(dir))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func writeField(h interface{ Write([]byte) (int, error) }, b []byte) {
	var n [8]byte
	l := uint64(len(b))
	for i := range n {
		n[i] = byte(l >> (8 * i))
	}
	_, _ = h.Write(n[:])
	_, _ = h.Write(b)
}

// Parts is a configuration file split for the assignment stream.
type Parts struct {
	Global Global
	// Jobs in Prometheus's order: the main file's scrape_configs, then
	// those of scrape_config_files, file by file.
	Jobs []Job
	// Config is the file as Prometheus's config.LoadFile loads it; it
	// validated the file.
	Config *promconfig.Config
}

// Split reads the configuration file at path, validates it with
// Prometheus's config.LoadFile (and the files scrape_config_files names),
// and splits it into the global part and one part per job. logger may be
// nil.
func Split(path string, logger *slog.Logger) (*Parts, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := promconfig.LoadFile(path, false, logger)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	// Validates scrape_config_files and job name uniqueness across files.
	if _, err := cfg.GetScrapeConfigs(); err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	doc, err := parseMapping(text)
	if err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config directory of %s: %w", path, err)
	}

	p := &Parts{Config: cfg}
	global := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	var files []string
	for i := 0; i+1 < len(doc.Content); i += 2 {
		key, val := doc.Content[i], doc.Content[i+1]
		switch key.Value {
		case "scrape_configs":
			jobs, err := splitJobs(val, "")
			if err != nil {
				return nil, fmt.Errorf("config %s: %w", path, err)
			}
			p.Jobs = append(p.Jobs, jobs...)
		case "scrape_config_files":
			if isNull(val) {
				break
			}
			if val.Kind != yaml.SequenceNode {
				return nil, fmt.Errorf("config %s: scrape_config_files: not a list", path)
			}
			for _, v := range val.Content {
				if v.Kind != yaml.ScalarNode {
					return nil, fmt.Errorf("config %s: scrape_config_files: line %d: not a string", path, v.Line)
				}
				files = append(files, v.Value)
			}
		}
		if !globalExcluded[key.Value] {
			global.Content = append(global.Content, key, val)
		}
	}
	if len(global.Content) > 0 {
		if p.Global.YAML, err = yaml.Marshal(global); err != nil {
			return nil, fmt.Errorf("marshal global part of %s: %w", path, err)
		}
	}
	p.Global.Dir = dir

	for _, pat := range files {
		matches, err := filepath.Glob(config.JoinDir(dir, pat))
		if err != nil {
			return nil, fmt.Errorf("config %s: scrape_config_files %q: %w", path, pat, err)
		}
		for _, file := range matches {
			jobs, err := splitFile(file)
			if err != nil {
				return nil, err
			}
			p.Jobs = append(p.Jobs, jobs...)
		}
	}
	return p, nil
}

func splitFile(file string) ([]Job, error) {
	text, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read scrape config file: %w", err)
	}
	doc, err := parseMapping(text)
	if err != nil {
		return nil, fmt.Errorf("parse scrape config file %s: %w", file, err)
	}
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, fmt.Errorf("directory of %s: %w", file, err)
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value == "scrape_configs" {
			jobs, err := splitJobs(doc.Content[i+1], dir)
			if err != nil {
				return nil, fmt.Errorf("scrape config file %s: %w", file, err)
			}
			return jobs, nil
		}
	}
	return nil, nil
}

func splitJobs(v *yaml.Node, dir string) ([]Job, error) {
	if isNull(v) {
		return nil, nil
	}
	if v.Kind != yaml.SequenceNode {
		return nil, errors.New("scrape_configs: not a list")
	}
	jobs := make([]Job, 0, len(v.Content))
	for i, el := range v.Content {
		if el.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("scrape_configs[%d]: not a mapping", i)
		}
		var name string
		for k := 0; k+1 < len(el.Content); k += 2 {
			if el.Content[k].Value == "job_name" {
				name = el.Content[k+1].Value
			}
		}
		if name == "" {
			return nil, fmt.Errorf("scrape_configs[%d]: job_name is empty", i)
		}
		text, err := yaml.Marshal(el)
		if err != nil {
			return nil, fmt.Errorf("scrape_configs[%d] (job %q): marshal: %w", i, name, err)
		}
		jobs = append(jobs, Job{Name: name, Hash: JobHash(text, dir), YAML: text, Dir: dir})
	}
	return jobs, nil
}

// parseMapping parses a YAML document whose top level is a mapping (an
// empty document gives an empty one) into nodes that keep every scalar as
// written, aliases replaced by copies of what they name (so that any part
// stands on its own), without comments (they do not change a hash).
func parseMapping(text []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}, nil
	}
	top := plain(doc.Content[0], 0)
	if top == nil {
		return nil, errors.New("aliases nested too deep")
	}
	if top.Kind != yaml.MappingNode {
		if isNull(top) {
			return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}, nil
		}
		return nil, fmt.Errorf("line %d: top level is not a mapping", top.Line)
	}
	return top, nil
}

// plain returns a copy of n with aliases expanded and anchors and comments
// dropped; nil when aliases nest deeper than 100 (a cycle, or a YAML bomb).
func plain(n *yaml.Node, depth int) *yaml.Node {
	if depth > 100 {
		return nil
	}
	if n.Kind == yaml.AliasNode {
		return plain(n.Alias, depth+1)
	}
	c := *n
	c.Anchor, c.HeadComment, c.LineComment, c.FootComment = "", "", "", ""
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, ch := range n.Content {
		if c.Content[i] = plain(ch, depth); c.Content[i] == nil {
			return nil
		}
	}
	return &c
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// Build rebuilds the configuration a worker runs from the global part and
// the jobs in force: config.Load on the global text with every job's text
// under scrape_configs, SetDirectory of each job's own Dir, then of the
// global Dir, and the global ExternalLabels over global.external_labels.
// logger may be nil.
func Build(g Global, jobs []Job, logger *slog.Logger) (*promconfig.Config, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	if len(bytes.TrimSpace(g.YAML)) > 0 {
		var err error
		if doc, err = parseMapping(g.YAML); err != nil {
			return nil, fmt.Errorf("parse global config: %w", err)
		}
	}
	// Drop whatever the global text should not hold, so that a job list
	// there cannot clash with ours.
	var kept []*yaml.Node
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if !globalExcluded[doc.Content[i].Value] {
			kept = append(kept, doc.Content[i], doc.Content[i+1])
		}
	}
	doc.Content = kept
	elems := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, j := range jobs {
		m, err := parseMapping(j.YAML)
		if err != nil {
			return nil, fmt.Errorf("parse scrape config of job %q: %w", j.Name, err)
		}
		elems.Content = append(elems.Content, m)
	}
	if len(elems.Content) > 0 {
		doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "scrape_configs"}, elems)
	}
	text, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("marshal config: %w", err)
	}
	cfg, err := promconfig.Load(string(text), logger)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	if len(cfg.ScrapeConfigs) != len(jobs) {
		return nil, fmt.Errorf("load config: %d scrape configs from %d jobs", len(cfg.ScrapeConfigs), len(jobs))
	}
	for i, sc := range cfg.ScrapeConfigs {
		if sc.JobName != jobs[i].Name {
			return nil, fmt.Errorf("scrape config of job %q names job %q", jobs[i].Name, sc.JobName)
		}
		if jobs[i].Dir != "" {
			sc.SetDirectory(jobs[i].Dir)
		}
	}
	cfg.SetDirectory(g.Dir)
	if !g.ExternalLabels.IsEmpty() {
		b := labels.NewBuilder(cfg.GlobalConfig.ExternalLabels)
		g.ExternalLabels.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
		cfg.GlobalConfig.ExternalLabels = b.Labels()
	}
	return cfg, nil
}
