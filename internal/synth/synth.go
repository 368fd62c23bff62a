// Package synth serves synthetic targets: node_exporter-like nodes and
// instrumented applications, with realistic metric families and label sets,
// counters that increase and gauges that hold still, so that two scrapers of
// the same target at different moments agree on every gauge. Benchmarks and
// the simulated fleet (internal/fleet) use it as the workload.
//
// A Layout holds the families and label sets of one kind and size of target
// and is shared: an Exporter is a seed, a start time and a churn rate over a
// Layout, a few dozen bytes, so a fleet of 10,000 targets holds one Layout
// per kind. Values are derived from the seed and the series' position at
// each scrape.
package synth

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// DefaultSeries is the series count of a node target when Options leave it
// 0: about what node_exporter exposes on a mid-sized node.
const DefaultSeries = 800

// DefaultAppSeries is the series count of an application target when
// Options leave it 0.
const DefaultAppSeries = 50

// ChurnLabel is the label a churned series carries: its generation, which
// starts at 1 and increases each time the series is replaced.
const ChurnLabel = "series_generation"

// Kind is what a target looks like.
type Kind int

const (
	// KindNode is a node_exporter: CPU per core and mode, memory,
	// filesystems, disk IO, network devices, load.
	KindNode Kind = iota
	// KindApp is an instrumented application: HTTP request counters and
	// latency histograms per handler, go_* and process_* gauges.
	KindApp
)

func (k Kind) String() string {
	switch k {
	case KindNode:
		return "node"
	case KindApp:
		return "app"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Options shape one target.
type Options struct {
	// Series is the exact number of series the target exposes (0:
	// DefaultSeries for a node, DefaultAppSeries for an application).
	Series int
	// Seed varies values (and which series churn when) between targets.
	Seed uint64
	// Start is when counters were zero; zero means now.
	Start time.Time
	// Kind is the exposition's shape; the zero value is KindNode.
	Kind Kind
	// ChurnRate is the fraction of the series replaced per minute: a
	// replaced series gets a new value of ChurnLabel, so it is a new series
	// to Prometheus. 0 means none; at 1 every series is replaced once a
	// minute. Which series churn when is deterministic from Seed and the
	// time since Start.
	ChurnRate float64
}

type series struct {
	prefix   []byte  // name{labels}␠
	cut      int     // where a churn label goes: before '}' or before ' '
	labelled bool    // prefix has a label set
	scale    float64 // value scale
	share    float64 // fraction of the group's value (histogram buckets); 1 otherwise
	group    uint32  // values are drawn per group
	counter  bool
	integer  bool // a count: whole numbers
	zero     bool // a gauge held at 0 (scale and share unused)
}

type family struct {
	header []byte // # HELP and # TYPE lines
	series []series
}

// Layout is the families and label sets of one kind and size of target. It
// is immutable and shared by every Exporter made from it.
type Layout struct {
	kind     Kind
	families []family
	n        int
	bufs     sync.Pool
}

// NewLayout lays out a target of kind exposing exactly series series (0:
// the kind's default).
func NewLayout(kind Kind, series int) *Layout {
	n := series
	if n <= 0 {
		n = DefaultSeries
		if kind == KindApp {
			n = DefaultAppSeries
		}
	}
	b := builder{left: n}
	switch kind {
	case KindApp:
		b.app()
	default:
		b.node()
	}
	l := &Layout{kind: kind, families: b.families, n: n - b.left}
	l.bufs.New = func() any { return new([]byte) }
	return l
}

// Kind is the layout's kind.
func (l *Layout) Kind() Kind { return l.kind }

// Series is how many series a target of this layout exposes.
func (l *Layout) Series() int { return l.n }

// New returns a target of this layout; opts.Series and opts.Kind are
// ignored.
func (l *Layout) New(opts Options) *Exporter {
	start := opts.Start
	if start.IsZero() {
		start = time.Now()
	}
	return &Exporter{layout: l, seed: opts.Seed*0x9e3779b97f4a7c15 + 1, start: start, churn: max(opts.ChurnRate, 0)}
}

// Exporter is one synthetic target. It is safe for concurrent scrapes.
type Exporter struct {
	layout *Layout
	seed   uint64
	start  time.Time
	churn  float64
}

// New builds a target exposing exactly opts.Series series, with a layout
// of its own. Many targets of one shape should share NewLayout's.
func New(opts Options) *Exporter {
	return NewLayout(opts.Kind, opts.Series).New(opts)
}

// Series is how many series the target exposes.
func (e *Exporter) Series() int { return e.layout.n }

// ServeHTTP writes the exposition as of now.
func (e *Exporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	bp := e.layout.bufs.Get().(*[]byte)
	buf := e.Append((*bp)[:0], time.Now())
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	_, _ = w.Write(buf)
	*bp = buf
	e.layout.bufs.Put(bp)
}

// WriteTo writes the exposition as of now.
func (e *Exporter) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(e.Append(nil, time.Now()))
	return int64(n), err
}

// mix is splitmix64's finalizer: deterministic, no shared state.
func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func unit(z uint64) float64 { return float64(z>>11) / (1 << 53) }

// Append appends the text exposition as of now to buf.
func (e *Exporter) Append(buf []byte, now time.Time) []byte {
	// Whole seconds keep counters (and generations) identical for scrapes
	// within one second.
	elapsed := math.Floor(now.Sub(e.start).Seconds())
	minutes := elapsed / 60
	for _, f := range e.layout.families {
		buf = append(buf, f.header...)
		for _, s := range f.series {
			if e.churn > 0 {
				// The generation crosses an integer at a fraction churn of
				// the series per minute, each at its own phase; the series
				// of one histogram churn together.
				if g := uint64(minutes*e.churn + unit(mix(e.seed^0x5bd1e995^uint64(s.group)*0xff51afd7ed558ccd))); g > 0 {
					buf = append(buf, s.prefix[:s.cut]...)
					if s.labelled {
						buf = append(buf, ',')
					} else {
						buf = append(buf, '{')
					}
					buf = append(buf, ChurnLabel+`="`...)
					buf = strconv.AppendUint(buf, g, 10)
					buf = append(buf, '"')
					if !s.labelled {
						buf = append(buf, '}')
					}
					buf = append(buf, s.prefix[s.cut:]...)
				} else {
					buf = append(buf, s.prefix...)
				}
			} else {
				buf = append(buf, s.prefix...)
			}
			var v float64
			if !s.zero {
				v = (math.Round(unit(mix(e.seed^uint64(s.group)*0xc2b2ae3d27d4eb4f))*s.scale*1000)/1000 + 1) * s.share
			}
			switch {
			case s.integer:
				v = math.Floor(v * elapsed)
			case s.counter:
				v = math.Round(v*elapsed*1000) / 1000
			}
			buf = strconv.AppendFloat(buf, v, 'g', -1, 64)
			buf = append(buf, '\n')
		}
	}
	return buf
}

// builder lays out families until left series are spent.
type builder struct {
	families []family
	left     int
	groups   uint32
}

func prefix(name string, set []string) (p []byte, cut int) {
	p = []byte(name)
	if len(set) > 0 {
		p = append(p, '{')
		for i := 0; i < len(set); i += 2 {
			if i > 0 {
				p = append(p, ',')
			}
			p = append(p, set[i]...)
			p = append(p, '=')
			p = strconv.AppendQuote(p, set[i+1])
		}
		p = append(p, '}')
	}
	cut = len(p)
	if len(set) > 0 {
		cut--
	}
	return append(p, ' '), cut
}

func header(name, help, typ string) []byte {
	return fmt.Appendf(nil, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// add appends a family with one series per label set (each a list of
// name, value pairs), as far as series are left.
func (b *builder) add(name, help string, counter bool, scale float64, sets [][]string) {
	if b.left <= 0 || len(sets) == 0 {
		return
	}
	typ := "gauge"
	if counter {
		typ = "counter"
	}
	f := family{header: header(name, help, typ)}
	for _, set := range sets {
		if b.left == 0 {
			break
		}
		p, cut := prefix(name, set)
		b.groups++
		f.series = append(f.series, series{prefix: p, cut: cut, labelled: len(set) > 0, scale: scale, share: 1, group: b.groups, counter: counter})
		b.left--
	}
	b.families = append(b.families, f)
}

// zero appends a gauge family whose series are held at 0, as far as
// series are left.
func (b *builder) zero(name, help string, sets [][]string) {
	before := len(b.families)
	b.add(name, help, false, 0, sets)
	if n := len(b.families); n > before {
		for i := range b.families[n-1].series {
			b.families[n-1].series[i].zero = true
		}
	}
}

// histogram appends a histogram family with one histogram per label set:
// cumulative buckets over cdf (le → fraction of requests), _sum and
// _count, as far as whole histograms fit in the series left.
func (b *builder) histogram(name, help string, scale float64, sets [][]string, les []string, cdf []float64, meanSeconds float64) {
	if n := min(len(sets), b.left/(len(les)+2)); n < len(sets) {
		sets = sets[:n]
	}
	if len(sets) == 0 {
		return
	}
	f := family{header: header(name, help, "histogram")}
	for _, set := range sets {
		b.groups++
		one := func(n string, extra []string, share float64, integer bool) {
			p, cut := prefix(n, append(append([]string(nil), set...), extra...))
			f.series = append(f.series, series{prefix: p, cut: cut, labelled: true, scale: scale, share: share, group: b.groups, counter: true, integer: integer})
			b.left--
		}
		for i, le := range les {
			one(name+"_bucket", []string{"le", le}, cdf[i], true)
		}
		one(name+"_sum", nil, meanSeconds, false)
		one(name+"_count", nil, 1, true)
	}
	b.families = append(b.families, f)
}

func cross(name string, values []string) [][]string {
	sets := make([][]string, len(values))
	for i, v := range values {
		sets[i] = []string{name, v}
	}
	return sets
}

var (
	cpuModes    = []string{"idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"}
	disks       = []string{"nvme0n1", "nvme1n1", "sda", "sdb"}
	netDevices  = []string{"eth0", "eth1", "lo", "cni0", "flannel.1", "docker0"}
	mountpoints = [][]string{
		{"device", "/dev/nvme0n1p1", "fstype", "ext4", "mountpoint", "/"},
		{"device", "/dev/nvme1n1", "fstype", "xfs", "mountpoint", "/var/lib/kubelet"},
		{"device", "/dev/sda1", "fstype", "xfs", "mountpoint", "/data"},
		{"device", "tmpfs", "fstype", "tmpfs", "mountpoint", "/run"},
		{"device", "overlay", "fstype", "overlay", "mountpoint", "/var/lib/docker"},
	}
	memoryFields = []string{"MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapCached",
		"Active", "Inactive", "Active_anon", "Inactive_anon", "Active_file", "Inactive_file", "Unevictable",
		"Mlocked", "SwapTotal", "SwapFree", "Dirty", "Writeback", "AnonPages", "Mapped", "Shmem",
		"KReclaimable", "Slab", "SReclaimable", "SUnreclaim", "KernelStack", "PageTables", "CommitLimit",
		"Committed_AS", "VmallocTotal", "VmallocUsed", "HugePages_Total", "HugePages_Free", "Hugepagesize"}

	handlers    = []string{"/api/v1/orders", "/api/v1/items", "/api/v1/users", "/api/v1/cart", "/healthz", "/metrics"}
	methods     = []string{"GET", "POST", "PUT", "DELETE"}
	codes       = []string{"200", "201", "400", "404", "500"}
	latencyLes  = []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"}
	latencyCDF  = []float64{0.05, 0.12, 0.3, 0.5, 0.7, 0.88, 0.95, 0.98, 0.995, 0.999, 0.9999, 1}
	nodeUnameOS = []string{"machine", "x86_64", "release", "6.1.0-28-amd64", "sysname", "Linux", "version", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1"}
)

// node lays out a node_exporter: the families every node has, then per-cpu
// families, as a bigger node has more of them.
func (b *builder) node() {
	b.add("node_load1", "1m load average.", false, 40, [][]string{nil})
	b.add("node_load5", "5m load average.", false, 40, [][]string{nil})
	b.add("node_load15", "15m load average.", false, 40, [][]string{nil})
	b.add("node_boot_time_seconds", "Node boot time, in unixtime.", false, 1.7e9, [][]string{nil})
	for _, f := range memoryFields {
		b.add("node_memory_"+f+"_bytes", "Memory information field "+f+"_bytes.", false, 256<<30, [][]string{nil})
	}
	for _, m := range []struct{ name, help string }{
		{"avail_bytes", "Filesystem space available to non-root users in bytes."},
		{"free_bytes", "Filesystem free space in bytes."},
		{"size_bytes", "Filesystem size in bytes."},
		{"files", "Filesystem total file nodes."},
		{"files_free", "Filesystem total free file nodes."},
	} {
		b.add("node_filesystem_"+m.name, m.help, false, 1<<40, mountpoints)
	}
	b.zero("node_filesystem_readonly", "Filesystem read-only status.", mountpoints)
	for _, m := range []string{"read_bytes", "written_bytes", "reads_completed", "writes_completed",
		"io_time_seconds", "read_time_seconds", "write_time_seconds", "discarded_sectors"} {
		b.add("node_disk_"+m+"_total", "The total number of "+m+".", true, 1<<20, cross("device", disks))
	}
	b.add("node_disk_io_now", "The number of I/Os currently in progress.", false, 16, cross("device", disks))
	for _, dir := range []string{"receive", "transmit"} {
		for _, m := range []string{"bytes", "packets", "errs", "drop"} {
			b.add("node_network_"+dir+"_"+m+"_total", "Network device statistic "+dir+"_"+m+".", true, 1<<20, cross("device", netDevices))
		}
	}
	b.add("node_network_up", "Value is 1 if operstate is 'up', 0 otherwise.", false, 0, cross("device", netDevices))
	b.add("node_context_switches_total", "Total number of context switches.", true, 1e5, [][]string{nil})
	b.add("node_intr_total", "Total number of interrupts serviced.", true, 1e5, [][]string{nil})
	b.add("node_forks_total", "Total number of forks.", true, 100, [][]string{nil})
	b.add("node_procs_running", "Number of processes in runnable state.", false, 48, [][]string{nil})
	b.add("node_procs_blocked", "Number of processes blocked waiting for I/O to complete.", false, 4, [][]string{nil})
	b.add("node_uname_info", "Labeled system information as provided by the uname system call.", false, 0, [][]string{nodeUnameOS})

	cpus := max(1, b.left/len(cpuModes))
	sets := make([][]string, 0, cpus*len(cpuModes))
	for c := range cpus {
		for _, m := range cpuModes {
			sets = append(sets, []string{"cpu", strconv.Itoa(c), "mode", m})
		}
	}
	b.add("node_cpu_seconds_total", "Seconds the CPUs spent in each mode.", true, 1, sets)
	rest := make([][]string, b.left)
	for i := range rest {
		rest[i] = []string{"cpu", strconv.Itoa(i)}
	}
	b.add("node_softnet_processed_total", "Number of processed packets.", true, 1000, rest)
}

// app lays out an instrumented Go application: runtime and process gauges,
// a latency histogram per handler for the two busiest, then request
// counters per handler, method and code.
func (b *builder) app() {
	b.add("go_goroutines", "Number of goroutines that currently exist.", false, 500, [][]string{nil})
	b.add("go_threads", "Number of OS threads created.", false, 40, [][]string{nil})
	b.add("go_memstats_alloc_bytes", "Number of bytes allocated and still in use.", false, 512<<20, [][]string{nil})
	b.add("go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use.", false, 512<<20, [][]string{nil})
	b.add("go_memstats_sys_bytes", "Number of bytes obtained from system.", false, 1<<30, [][]string{nil})
	b.add("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", true, 0.5, [][]string{nil})
	b.add("process_resident_memory_bytes", "Resident memory size in bytes.", false, 1<<30, [][]string{nil})
	b.add("process_open_fds", "Number of open file descriptors.", false, 1000, [][]string{nil})
	b.add("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", false, 1.7e9, [][]string{nil})
	b.histogram("http_request_duration_seconds", "Latency of HTTP requests.", 50,
		cross("handler", handlers[:2]), latencyLes, latencyCDF, 0.08)
	sets := make([][]string, b.left)
	per := len(methods) * len(codes)
	for i := range sets {
		h := i / per
		handler := fmt.Sprintf("/api/v1/resource/%d", h)
		if h < len(handlers) {
			handler = handlers[h]
		}
		sets[i] = []string{"handler", handler, "method", methods[i%per/len(codes)], "code", codes[i%len(codes)]}
	}
	before := len(b.families)
	b.add("http_requests_total", "Total number of HTTP requests by handler, method and code.", true, 50, sets)
	if n := len(b.families); n > before {
		for i := range b.families[n-1].series {
			b.families[n-1].series[i].integer = true
		}
	}
}
