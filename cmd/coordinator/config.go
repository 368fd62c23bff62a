package main

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/shardscrape/shardscrape/coordinator"
	"github.com/shardscrape/shardscrape/internal/promcfg"
	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
	"github.com/shardscrape/shardscrape/relabel"
)

// loadedConfig is a validated configuration file in every form the
// coordinator's components take it.
type loadedConfig struct {
	// core is what the coordinator core sends workers.
	core coordinator.Config
	// scrape is every job's scrape config, resolved once (scrape_config_files
	// included) so that the core, the pipeline and discovery see the same.
	scrape []*config.ScrapeConfig
	// sd is every job's service discovery configs, for discovery.Manager.
	sd map[string]discovery.Configs
}

// loadConfig loads and validates the configuration file at path:
// Prometheus's config.LoadFile (through promcfg.Split, which also checks
// scrape_config_files), then the split for workers with the cluster label
// as an external label. Errors name the file and, as Prometheus's do, the
// bad key.
func loadConfig(path string, cluster relabel.ClusterOptions, logger *slog.Logger) (*loadedConfig, error) {
	parts, err := promcfg.Split(path, logger)
	if err != nil {
		return nil, err
	}
	scs, err := parts.Config.GetScrapeConfigs()
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	ext, err := cluster.ExternalLabels(parts.Config.GlobalConfig.ExternalLabels)
	if err != nil {
		return nil, fmt.Errorf("--cluster.label/--cluster.name: %w", err)
	}
	parts.Global.ExternalLabels = ext
	global := &shardscrapev1.GlobalConfig{
		Hash:      parts.Global.Hash(),
		Yaml:      parts.Global.YAML,
		ConfigDir: parts.Global.Dir,
	}
	ext.Range(func(l labels.Label) {
		global.ExternalLabels = append(global.ExternalLabels, &shardscrapev1.Label{Name: l.Name, Value: l.Value})
	})

	byName := make(map[string]*config.ScrapeConfig, len(scs))
	for _, sc := range scs {
		byName[sc.JobName] = sc
	}
	lc := &loadedConfig{
		scrape: scs,
		core: coordinator.Config{
			Global:         global,
			ScrapeInterval: time.Duration(parts.Config.GlobalConfig.ScrapeInterval),
		},
		sd: make(map[string]discovery.Configs, len(scs)),
	}
	for _, j := range parts.Jobs {
		sc := byName[j.Name]
		if sc == nil {
			return nil, fmt.Errorf("load config %s: job %q split but not loaded", path, j.Name)
		}
		lc.core.Jobs = append(lc.core.Jobs, coordinator.JobConfig{
			Config: &shardscrapev1.ScrapeConfig{
				Hash:      j.Hash,
				JobName:   j.Name,
				Yaml:      j.YAML,
				ConfigDir: j.Dir,
			},
			ScrapeInterval: time.Duration(sc.ScrapeInterval),
			ScrapeConfig:   sc,
		})
		lc.sd[j.Name] = sc.ServiceDiscoveryConfigs
	}
	return lc, nil
}

// checkConfig is --config.check: it loads path as the coordinator would and
// prints the verdict. It returns the exit code.
func checkConfig(path string, cluster relabel.ClusterOptions, stdout, stderr io.Writer) int {
	lc, err := loadConfig(path, cluster, nil)
	if err != nil {
		fmt.Fprintf(stderr, "FAILED: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "SUCCESS: %s is valid: %d scrape configs\n", path, len(lc.core.Jobs))
	return 0
}
