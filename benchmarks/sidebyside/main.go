// Command sidebyside runs one workload through shardscrape's scraper and
// through its peers, one after another on the same machine, and prints what
// the operating system and the receiver saw: CPU seconds and peak RSS from
// /proc, samples arrived from VictoriaMetrics. It never trusts a program's
// own account of itself.
//
//	go run ./benchmarks/sidebyside -targets 100 -series 800 -interval 5s -duration 5m
//
// A/B runs: -peers takes a process more than once, in the order given (A B A
// B interleaves them), and a peer may carry environment variables
// (shardscrape+GOGC=100), flags (shardscrape+--flag=value) or queue_config
// settings of its remote_write (shardscrape+queue.min_shards=1). The
// peer shardscrape-base is the scraper binary named by -scraper-base (built
// from another commit). Repeated peers are summed: samples per CPU-second
// over all their runs, and their median peak RSS. -pprof DIR fetches a CPU
// profile over the second half of each run and an in-use heap profile at
// its end from the process's /debug/pprof/.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shardscrape/shardscrape/internal/synth"
)

type options struct {
	bin         string
	scraperBase string
	targets     int
	series      int
	interval    time.Duration
	duration    time.Duration
	peers       string
	out         string
	pprofDir    string
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory holding scraper, prometheus and victoria-metrics")
	flag.IntVar(&o.targets, "targets", 100, "synthetic node_exporter targets")
	flag.IntVar(&o.series, "series", synth.DefaultSeries, "series per target")
	flag.DurationVar(&o.interval, "interval", 5*time.Second, "scrape interval")
	flag.DurationVar(&o.duration, "duration", 5*time.Minute, "how long each process scrapes")
	flag.StringVar(&o.scraperBase, "scraper-base", "bin/scraper-base", "scraper binary of the shardscrape-base peer (A/B against another build)")
	flag.StringVar(&o.peers, "peers", "shardscrape,prometheus-agent", "processes to run, in order (shardscrape, shardscrape-base, prometheus-agent, vmagent), each optionally followed by +KEY=VALUE (environment), +--flag=value (command-line) or +queue.KEY=VALUE (remote_write queue_config) items; repeat a peer to interleave")
	flag.StringVar(&o.pprofDir, "pprof", "", "save a CPU profile (second half of each run) and an in-use heap profile (at its end) of every process into this directory")
	flag.StringVar(&o.out, "out", "", "also write the markdown table to this file")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		fmt.Fprintln(os.Stderr, "sidebyside:", err)
		os.Exit(1)
	}
}

// peer is one process to run: its kind, and the environment and flags
// added to its command.
type peer struct {
	spec  string // as given in -peers
	kind  string
	env   []string
	flags []string
	queue []string // queue_config lines (KEY: VALUE) of its remote_write
	run   string   // the bench label of this run, unique
}

func parsePeer(spec string) (peer, error) {
	parts := strings.Split(spec, "+")
	p := peer{spec: spec, kind: parts[0]}
	switch p.kind {
	case "shardscrape", "shardscrape-base", "prometheus-agent", "vmagent":
	default:
		return peer{}, fmt.Errorf("-peers: unknown peer %q in %q", p.kind, spec)
	}
	for _, item := range parts[1:] {
		switch {
		case strings.HasPrefix(item, "queue."):
			k, v, ok := strings.Cut(strings.TrimPrefix(item, "queue."), "=")
			if !ok {
				return peer{}, fmt.Errorf("-peers: %q in %q: want queue.KEY=VALUE", item, spec)
			}
			p.queue = append(p.queue, k+": "+v)
		case strings.HasPrefix(item, "-"):
			p.flags = append(p.flags, item)
		case strings.Contains(item, "="):
			p.env = append(p.env, item)
		default:
			return peer{}, fmt.Errorf("-peers: %q in %q is neither KEY=VALUE, queue.KEY=VALUE nor a -flag", item, spec)
		}
	}
	return p, nil
}

// result is what one process cost and delivered.
type result struct {
	peer       string
	run        string
	cpuSeconds float64
	peakRSS    int64 // bytes
	endRSS     int64 // bytes, VmRSS just before the stop
	diskBytes  int64 // the process's data directory (WAL) just before the stop
	samples    float64
	expected   float64
}

func run(ctx context.Context, o options, logger *slog.Logger) error {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sidebyside-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	vm, vmURL, err := startVM(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer vm.stop()

	addrs, closeTargets, err := serveTargets(o.targets, o.series)
	if err != nil {
		return err
	}
	defer closeTargets()

	if o.pprofDir != "" {
		if err := os.MkdirAll(o.pprofDir, 0o755); err != nil {
			return err
		}
	}
	var results []result
	for i, spec := range strings.Split(o.peers, ",") {
		p, err := parsePeer(spec)
		if err != nil {
			return err
		}
		p.run = fmt.Sprintf("%s-%d", p.kind, i)
		logger.Info("running", "peer", spec, "label", p.run, "duration", o.duration)
		r, err := runPeer(ctx, o, bin, dir, vmURL, p, addrs, logger)
		if err != nil {
			return fmt.Errorf("%s: %w", spec, err)
		}
		results = append(results, r)
	}
	table := render(o, results)
	fmt.Print(table)
	if o.out != "" {
		return os.WriteFile(o.out, []byte(table), 0o644)
	}
	return nil
}

type proc struct {
	cmd    *exec.Cmd
	waited chan struct{} // closed once the process has exited
}

func start(ctx context.Context, logPath string, env []string, name string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, waited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.waited)
	}()
	go func() {
		select {
		case <-ctx.Done():
			p.stop()
		case <-p.waited:
		}
	}()
	return p, nil
}

func (p *proc) running() bool {
	select {
	case <-p.waited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process this program started (by pid), and
// SIGKILL if it is still there after a minute.
func (p *proc) stop() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.waited:
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		<-p.waited
	}
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitHTTP(ctx context.Context, u string, p *proc) error {
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !p.running() {
			return fmt.Errorf("%s exited before %s answered", p.cmd.Path, u)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func startVM(ctx context.Context, bin, dir string) (*proc, string, error) {
	addr, err := freePort()
	if err != nil {
		return nil, "", err
	}
	p, err := start(ctx, filepath.Join(dir, "vm.log"), nil, filepath.Join(bin, "victoria-metrics"),
		"-httpListenAddr="+addr, "-storageDataPath="+filepath.Join(dir, "vm"),
		"-retentionPeriod=1d", "-search.latencyOffset=0s", "-search.disableCache")
	if err != nil {
		return nil, "", err
	}
	u := "http://" + addr
	if err := waitHTTP(ctx, u+"/health", p); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, u, nil
}

// serveTargets listens once per target on loopback, each its own address.
func serveTargets(n, series int) ([]string, func(), error) {
	var (
		addrs []string
		srvs  []*http.Server
	)
	closeAll := func() {
		for _, s := range srvs {
			s.Close()
		}
	}
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		s := &http.Server{Handler: synth.New(synth.Options{Series: series, Seed: uint64(i)}), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = s.Serve(l) }()
		srvs = append(srvs, s)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, closeAll, nil
}

// config is the prometheus.yml of a run; vmURL empty leaves remote_write out.
func config(o options, vmURL, label string, queue []string, addrs []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  external_labels:\n    bench: %s\n", o.interval, min(o.interval, 10*time.Second), label)
	fmt.Fprintf(&b, "scrape_configs:\n- job_name: node\n  static_configs:\n  - targets:\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "    - %s\n", a)
	}
	if vmURL == "" {
		// vmagent: no remote_write section (it rejects one); -remoteWrite.url.
		return b.String()
	}
	fmt.Fprintf(&b, "remote_write:\n- url: %s/api/v1/write\n", vmURL)
	if len(queue) > 0 {
		fmt.Fprintf(&b, "  queue_config:\n")
		for _, q := range queue {
			fmt.Fprintf(&b, "    %s\n", q)
		}
	}
	return b.String()
}

func runPeer(ctx context.Context, o options, bin, dir, vmURL string, pr peer, addrs []string, logger *slog.Logger) (result, error) {
	pdir := filepath.Join(dir, pr.run)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return result{}, err
	}
	cfg := filepath.Join(pdir, "prometheus.yml")
	rwURL := vmURL
	if pr.kind == "vmagent" {
		rwURL = ""
	}
	if err := os.WriteFile(cfg, []byte(config(o, rwURL, pr.run, pr.queue, addrs)), 0o644); err != nil {
		return result{}, err
	}
	web, err := freePort()
	if err != nil {
		return result{}, err
	}
	var (
		name  string
		args  []string
		ready = "http://" + web + "/-/ready"
	)
	switch pr.kind {
	case "shardscrape", "shardscrape-base":
		name = filepath.Join(bin, "scraper")
		if pr.kind == "shardscrape-base" {
			if name, err = filepath.Abs(o.scraperBase); err != nil {
				return result{}, err
			}
		}
		args = []string{"--config.file=" + cfg, "--storage.path=" + filepath.Join(pdir, "data"), "--web.listen-address=" + web}
	case "prometheus-agent":
		name = filepath.Join(bin, "prometheus")
		args = []string{"--agent", "--config.file=" + cfg, "--storage.agent.path=" + filepath.Join(pdir, "data"), "--web.listen-address=" + web}
	case "vmagent":
		name = filepath.Join(bin, "vmagent")
		args = []string{"-promscrape.config=" + cfg, "-remoteWrite.url=" + vmURL + "/api/v1/write",
			"-remoteWrite.tmpDataPath=" + filepath.Join(pdir, "data"), "-httpListenAddr=" + web}
		ready = "http://" + web + "/health"
	}
	args = append(args, pr.flags...)
	p, err := start(ctx, filepath.Join(pdir, "log"), pr.env, name, args...)
	if err != nil {
		return result{}, err
	}
	defer p.stop()
	if err := waitHTTP(ctx, ready, p); err != nil {
		return result{}, err
	}
	begin := time.Now()
	logger.Info("ready", "peer", pr.spec, "pid", p.cmd.Process.Pid)
	profiled := make(chan error, 1)
	if o.pprofDir != "" {
		// CPU over the second half of the run (steady state), at most 60 s.
		secs := int(min(o.duration/2, time.Minute).Seconds())
		wait := o.duration - time.Duration(secs)*time.Second - 2*time.Second
		go func() {
			select {
			case <-ctx.Done():
				profiled <- ctx.Err()
				return
			case <-time.After(wait):
			}
			profiled <- fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", web, secs), filepath.Join(o.pprofDir, pr.run+".cpu.pb.gz"))
		}()
	} else {
		profiled <- nil
	}
	select {
	case <-ctx.Done():
		return result{}, ctx.Err()
	case <-time.After(o.duration):
	}
	if err := <-profiled; err != nil {
		logger.Warn("CPU profile", "peer", pr.spec, "err", err)
	}
	if o.pprofDir != "" {
		if err := fetch(ctx, "http://"+web+"/debug/pprof/heap", filepath.Join(o.pprofDir, pr.run+".heap.pb.gz")); err != nil {
			logger.Warn("heap profile", "peer", pr.spec, "err", err)
		}
	}
	cpu, rss, err := usage(p.cmd.Process.Pid)
	if err != nil {
		return result{}, err
	}
	endRSS, err := statusKiB(p.cmd.Process.Pid, "VmRSS")
	if err != nil {
		return result{}, err
	}
	disk, err := dirBytes(filepath.Join(pdir, "data"))
	if err != nil {
		return result{}, err
	}
	p.stop() // flushes the remote-write queue
	logger.Info("stopped", "peer", pr.spec, "cpu_seconds", cpu, "peak_rss", rss)
	window := time.Since(begin) + time.Minute
	samples, err := countSamples(ctx, vmURL, pr.run, window)
	if err != nil {
		return result{}, err
	}
	return result{
		peer: pr.spec, run: pr.run, cpuSeconds: cpu, peakRSS: rss, endRSS: endRSS, diskBytes: disk, samples: samples,
		expected: float64(len(addrs)*o.series) * o.duration.Seconds() / o.interval.Seconds(),
	}, nil
}

// fetch saves the body of a GET of u into path.
func fetch(ctx context.Context, u, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return f.Close()
}

// usage reads CPU seconds (user+system) and peak RSS of a running process.
func usage(pid int) (float64, int64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	var hwm int64
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("parse VmHWM: %w", err)
			}
			hwm = kb << 10
		}
	}
	return (utime + stime) / 100, hwm, nil
}

// dirBytes is the size of the regular files under dir (0 if it does not exist).
func dirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

// statusKiB reads one kB field of /proc/<pid>/status, in bytes.
func statusKiB(pid int, field string) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s: %w", field, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// countSamples asks VictoriaMetrics how many samples of the node job
// arrived under the peer's label.
func countSamples(ctx context.Context, vmURL, peer string, window time.Duration) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, vmURL+"/internal/force_flush", nil)
	if err != nil {
		return 0, err
	}
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	q := fmt.Sprintf(`sum(count_over_time({bench=%q,job="node",__name__!~"up|scrape_.+"}[%ds]))`, peer, int(window.Seconds()))
	resp, err := http.Get(vmURL + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("query %s: %w: %s", q, err, body)
	}
	if len(r.Data.Result) == 0 {
		return 0, nil
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}

func render(o options, rs []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Workload: %d targets × %d series every %s for %s (%.0f samples/s)\n\n",
		o.targets, o.series, o.interval, o.duration, float64(o.targets*o.series)/o.interval.Seconds())
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(w, "| run\t process\t CPU s\t CPU s / M samples\t peak RSS MiB\t RSS bytes / series\t RSS at end MiB\t disk MiB\t samples arrived\t of expected\t")
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t")
	for _, r := range rs {
		perM := r.cpuSeconds / (r.samples / 1e6)
		fmt.Fprintf(w, "| %s\t %s\t %.1f\t %.2f\t %.0f\t %.0f\t %.0f\t %.1f\t %.0f\t %.3f\t\n", r.run, r.peer, r.cpuSeconds, perM,
			float64(r.peakRSS)/(1<<20), float64(r.peakRSS)/float64(o.targets*o.series), float64(r.endRSS)/(1<<20),
			float64(r.diskBytes)/(1<<20), r.samples, r.samples/r.expected)
	}
	w.Flush()
	agg := aggregate(rs)
	if len(agg) > 1 {
		fmt.Fprintln(&b)
		if len(agg) < len(rs) {
			fmt.Fprintln(&b, "Repeated peers: samples per CPU-second over all their runs, median peak RSS.")
			fmt.Fprintln(&b)
		}
		// Every other peer against each of the peers (as given in
		// -peers) that are not shardscrape builds: the ratios the goals are
		// stated in.
		for _, ref := range agg {
			if strings.HasPrefix(ref.peer, "shardscrape") {
				continue
			}
			for _, r := range agg {
				if r.peer == ref.peer {
					continue
				}
				fmt.Fprintf(&b, "%s vs %s: samples per CPU-second %.2f×, peak RSS %.2f×\n", r.peer, ref.peer,
					(r.samples/r.cpuSeconds)/(ref.samples/ref.cpuSeconds), float64(r.peakRSS)/float64(ref.peakRSS))
			}
		}
		if !slices.ContainsFunc(agg, func(r result) bool { return !strings.HasPrefix(r.peer, "shardscrape") }) {
			base := agg[0]
			for _, r := range agg[1:] {
				fmt.Fprintf(&b, "%s vs %s: samples per CPU-second %.2f×, peak RSS %.2f×\n", r.peer, base.peer,
					(r.samples/r.cpuSeconds)/(base.samples/base.cpuSeconds), float64(r.peakRSS)/float64(base.peakRSS))
			}
		}
	}
	return b.String()
}

// aggregate merges the runs of each peer, in the order of first appearance:
// CPU and samples summed, peak RSS the median of the runs.
func aggregate(rs []result) []result {
	var (
		order []string
		by    = map[string]*result{}
		rss   = map[string][]int64{}
	)
	for _, r := range rs {
		a, ok := by[r.peer]
		if !ok {
			a = &result{peer: r.peer}
			by[r.peer] = a
			order = append(order, r.peer)
		}
		a.cpuSeconds += r.cpuSeconds
		a.samples += r.samples
		a.expected += r.expected
		rss[r.peer] = append(rss[r.peer], r.peakRSS)
	}
	out := make([]result, 0, len(order))
	for _, p := range order {
		v := rss[p]
		slices.Sort(v)
		a := by[p]
		a.peakRSS = v[len(v)/2]
		if len(v)%2 == 0 {
			a.peakRSS = (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		out = append(out, *a)
	}
	return out
}
