// Package targetid computes a scrape target's identity within the fleet as
// the contract defines it (proto/shardscrape/v1, Target.id). The coordinator
// computes it when it relabels discovered targets and the worker from the
// scrape.Target its scrape manager runs; the two must agree bit for bit, so
// both call this.
package targetid

import (
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
)

var sep = []byte{0xff}

// Of returns the id of target t of job: the xxhash64 of the job name, then
// each public label after relabeling (sorted by name) as name and value,
// then the scrape URL, each followed by a 0xff byte. Two targets get one id
// when they have the same labels and URL, that is when they write the same
// series; hidden settings (a relabeled __scrape_interval__) do not count.
func Of(job string, t *scrape.Target) uint64 {
	d := xxhash.New()
	write := func(s string) {
		_, _ = d.WriteString(s)
		_, _ = d.Write(sep)
	}
	write(job)
	t.LabelsRange(func(l labels.Label) {
		write(l.Name)
		write(l.Value)
	})
	write(t.URL().String())
	return d.Sum64()
}
