// Package promcfg splits a user's prometheus.yml into the parts the
// assignment stream carries (proto/shardscrape/v1: GlobalConfig and one
// ScrapeConfig per job) and rebuilds a *config.Config from them on the
// worker, exactly as the contract describes: Prometheus's config.Load on the
// global text with every job's text under scrape_configs, then
// SetDirectory, so that global defaults (interval, timeout, limits) apply as
// they would in Prometheus.
//
// Both directions work on the original text, read as generic YAML:
// Prometheus marshals secrets as "<secret>", so a remarshaled
// *config.Config would lose credentials.
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
	"go.yaml.in/yaml/v2"
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
	var doc yaml.MapSlice
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config directory of %s: %w", path, err)
	}

	p := &Parts{Config: cfg}
	var global yaml.MapSlice
	var files []string
	for _, item := range doc {
		key, _ := item.Key.(string)
		switch key {
		case "scrape_configs":
			jobs, err := splitJobs(item.Value, "")
			if err != nil {
				return nil, fmt.Errorf("config %s: %w", path, err)
			}
			p.Jobs = append(p.Jobs, jobs...)
		case "scrape_config_files":
			list, ok := item.Value.([]any)
			if !ok && item.Value != nil {
				return nil, fmt.Errorf("config %s: scrape_config_files: not a list", path)
			}
			for _, v := range list {
				s, ok := v.(string)
				if !ok {
					return nil, fmt.Errorf("config %s: scrape_config_files: %v is not a string", path, v)
				}
				files = append(files, s)
			}
		}
		if !globalExcluded[key] {
			global = append(global, item)
		}
	}
	if len(global) > 0 {
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
	var doc yaml.MapSlice
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, fmt.Errorf("parse scrape config file %s: %w", file, err)
	}
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, fmt.Errorf("directory of %s: %w", file, err)
	}
	for _, item := range doc {
		if k, _ := item.Key.(string); k == "scrape_configs" {
			jobs, err := splitJobs(item.Value, dir)
			if err != nil {
				return nil, fmt.Errorf("scrape config file %s: %w", file, err)
			}
			return jobs, nil
		}
	}
	return nil, nil
}

func splitJobs(v any, dir string) ([]Job, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, errors.New("scrape_configs: not a list")
	}
	jobs := make([]Job, 0, len(list))
	for i, el := range list {
		m, ok := el.(yaml.MapSlice)
		if !ok {
			return nil, fmt.Errorf("scrape_configs[%d]: not a mapping", i)
		}
		var name string
		for _, item := range m {
			if k, _ := item.Key.(string); k == "job_name" {
				name = fmt.Sprint(item.Value)
			}
		}
		if name == "" {
			return nil, fmt.Errorf("scrape_configs[%d]: job_name is empty", i)
		}
		text, err := yaml.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("scrape_configs[%d] (job %q): marshal: %w", i, name, err)
		}
		jobs = append(jobs, Job{Name: name, Hash: JobHash(text, dir), YAML: text, Dir: dir})
	}
	return jobs, nil
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
	var doc yaml.MapSlice
	if len(bytes.TrimSpace(g.YAML)) > 0 {
		if err := yaml.Unmarshal(g.YAML, &doc); err != nil {
			return nil, fmt.Errorf("parse global config: %w", err)
		}
	}
	// Drop whatever the global text should not hold, so that a job list
	// there cannot clash with ours.
	kept := doc[:0]
	for _, item := range doc {
		if k, _ := item.Key.(string); !globalExcluded[k] {
			kept = append(kept, item)
		}
	}
	doc = kept
	elems := make([]any, 0, len(jobs))
	for _, j := range jobs {
		var m yaml.MapSlice
		if err := yaml.Unmarshal(j.YAML, &m); err != nil {
			return nil, fmt.Errorf("parse scrape config of job %q: %w", j.Name, err)
		}
		elems = append(elems, m)
	}
	if len(elems) > 0 {
		doc = append(doc, yaml.MapItem{Key: "scrape_configs", Value: elems})
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
