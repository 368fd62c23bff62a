package shardring

import (
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"text/tabwriter"
)

// statusRow is one member in a rendered status page.
type statusRow struct {
	ID, Zone      string
	Weight        float64
	VirtualNodes  int
	OwnedFraction float64
	HasLoad       bool
	Keys, Cap     int
	LoadOverMean  float64
}

func (r *Ring) statusRows() []statusRow {
	frac := r.OwnedFraction()
	rows := make([]statusRow, len(r.members))
	for i, m := range r.members {
		rows[i] = statusRow{ID: m.ID, Zone: m.Zone, Weight: m.weight(), VirtualNodes: r.vnodes(m), OwnedFraction: frac[m.ID]}
	}
	return rows
}

// ServeHTTP renders the ring: members, weights, zones, virtual nodes and the
// fraction of the hash space each owns. Plain text, or HTML for browsers.
func (r *Ring) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	title := fmt.Sprintf("shardring: %d members, %d virtual nodes, load factor %g", len(r.members), len(r.points), r.opts.LoadFactor)
	renderStatus(w, req, title, r.statusRows())
}

// ServeHTTP renders the ring's status plus each member's keys, bound and
// load over its weighted mean.
func (a *Assignment) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rows := a.ring.statusRows()
	for i := range rows {
		rows[i].HasLoad, rows[i].Keys, rows[i].Cap = true, a.loads[i], a.caps[i]
		if mean := a.meanLoad(i); mean > 0 {
			rows[i].LoadOverMean = float64(a.loads[i]) / mean
		}
	}
	title := fmt.Sprintf("shardring: %d keys over %d members, imbalance %.4f (bound %g)", len(a.owner), len(a.ring.members), a.Imbalance(), a.ring.opts.LoadFactor)
	renderStatus(w, req, title, rows)
}

var statusHTML = template.Must(template.New("status").Parse(`<!DOCTYPE html>
<html><head><title>shardring</title></head><body>
<h1>{{.Title}}</h1>
<table border="1" cellpadding="4">
<tr><th>member</th><th>zone</th><th>weight</th><th>virtual nodes</th><th>owned fraction</th>{{if .Load}}<th>keys</th><th>bound</th><th>load/mean</th>{{end}}</tr>
{{range .Rows}}<tr><td>{{.ID}}</td><td>{{.Zone}}</td><td>{{.Weight}}</td><td>{{.VirtualNodes}}</td><td>{{printf "%.5f" .OwnedFraction}}</td>{{if .HasLoad}}<td>{{.Keys}}</td><td>{{.Cap}}</td><td>{{printf "%.4f" .LoadOverMean}}</td>{{end}}</tr>
{{end}}</table></body></html>
`))

func renderStatus(w http.ResponseWriter, req *http.Request, title string, rows []statusRow) {
	load := len(rows) > 0 && rows[0].HasLoad
	if strings.Contains(req.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = statusHTML.Execute(w, struct {
			Title string
			Load  bool
			Rows  []statusRow
		}{title, load, rows})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "MEMBER\tZONE\tWEIGHT\tVNODES\tOWNED")
	if load {
		fmt.Fprint(tw, "\tKEYS\tBOUND\tLOAD/MEAN")
	}
	fmt.Fprintln(tw)
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%g\t%d\t%.5f", row.ID, row.Zone, row.Weight, row.VirtualNodes, row.OwnedFraction)
		if load {
			fmt.Fprintf(tw, "\t%d\t%d\t%.4f", row.Keys, row.Cap, row.LoadOverMean)
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
}
