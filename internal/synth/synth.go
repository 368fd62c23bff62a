// Package synth serves synthetic node_exporter-like targets: realistic metric
// families and label sets, counters that increase and gauges that hold
// still, so that two scrapers of the same target at different moments agree
// on every gauge. Benchmarks and the simulated fleet use it as the workload.
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

// DefaultSeries is the series count of a target when Options leave it 0:
// about what node_exporter exposes on a mid-sized node.
const DefaultSeries = 800

// Options shape one target.
type Options struct {
	// Series is the exact number of series the target exposes (0: DefaultSeries).
	Series int
	// Seed varies values between targets.
	Seed uint64
	// Start is when counters were zero; zero means now.
	Start time.Time
}

type series struct {
	prefix  []byte  // name{labels}␠
	base    float64 // gauge value, or counter rate per second
	counter bool
}

type family struct {
	header []byte // # HELP and # TYPE lines
	series []series
}

// Exporter is one synthetic target. It is safe for concurrent scrapes.
type Exporter struct {
	families []family
	start    time.Time
	bufs     sync.Pool
}

// New builds a target exposing exactly opts.Series series.
func New(opts Options) *Exporter {
	n := opts.Series
	if n <= 0 {
		n = DefaultSeries
	}
	start := opts.Start
	if start.IsZero() {
		start = time.Now()
	}
	b := builder{left: n, rnd: opts.Seed*0x9e3779b97f4a7c15 + 1}
	b.fixed()
	b.fill()
	e := &Exporter{families: b.families, start: start}
	e.bufs.New = func() any { return new([]byte) }
	return e
}

// Series is how many series the target exposes.
func (e *Exporter) Series() int {
	n := 0
	for _, f := range e.families {
		n += len(f.series)
	}
	return n
}

// ServeHTTP writes the exposition as of now.
func (e *Exporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	bp := e.bufs.Get().(*[]byte)
	buf := e.Append((*bp)[:0], time.Now())
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	_, _ = w.Write(buf)
	*bp = buf
	e.bufs.Put(bp)
}

// WriteTo writes the exposition as of now.
func (e *Exporter) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(e.Append(nil, time.Now()))
	return int64(n), err
}

// Append appends the text exposition as of now to buf.
func (e *Exporter) Append(buf []byte, now time.Time) []byte {
	// Whole seconds keep counters identical for scrapes within one second.
	elapsed := math.Floor(now.Sub(e.start).Seconds())
	for _, f := range e.families {
		buf = append(buf, f.header...)
		for _, s := range f.series {
			buf = append(buf, s.prefix...)
			v := s.base
			if s.counter {
				v = math.Round(s.base*elapsed*1000) / 1000
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
	rnd      uint64
}

func (b *builder) next() float64 {
	// splitmix64: deterministic per seed, no shared state.
	b.rnd += 0x9e3779b97f4a7c15
	z := b.rnd
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
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
	f := family{header: fmt.Appendf(nil, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)}
	for _, set := range sets {
		if b.left == 0 {
			break
		}
		p := []byte(name)
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
		p = append(p, ' ')
		f.series = append(f.series, series{prefix: p, base: math.Round(b.next()*scale*1000)/1000 + 1, counter: counter})
		b.left--
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
)

// fixed adds the families every node has, whatever its size.
func (b *builder) fixed() {
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
		{"readonly", "Filesystem read-only status."},
	} {
		b.add("node_filesystem_"+m.name, m.help, false, 1<<40, mountpoints)
	}
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
}

// fill spends the remaining series on per-cpu families, as a bigger node
// has more of them.
func (b *builder) fill() {
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
