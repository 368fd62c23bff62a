// Command sidebyside runs one workload through shardscrape's scraper and
// through its peers, one after another on the same machine, and prints what
// the operating system and the receiver saw: CPU seconds and peak RSS from
// /proc, samples arrived from VictoriaMetrics. It never trusts a program's
// own account of itself.
//
//	go run ./benchmarks/sidebyside -targets 100 -series 800 -interval 5s -duration 5m
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
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shardscrape/shardscrape/internal/synth"
)

type options struct {
	bin      string
	targets  int
	series   int
	interval time.Duration
	duration time.Duration
	peers    string
	out      string
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory holding scraper, prometheus and victoria-metrics")
	flag.IntVar(&o.targets, "targets", 100, "synthetic node_exporter targets")
	flag.IntVar(&o.series, "series", synth.DefaultSeries, "series per target")
	flag.DurationVar(&o.interval, "interval", 5*time.Second, "scrape interval")
	flag.DurationVar(&o.duration, "duration", 5*time.Minute, "how long each process scrapes")
	flag.StringVar(&o.peers, "peers", "shardscrape,prometheus-agent", "processes to run, in order (shardscrape, prometheus-agent, vmagent)")
	flag.StringVar(&o.out, "out", "", "also write the markdown table to this file")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		fmt.Fprintln(os.Stderr, "sidebyside:", err)
		os.Exit(1)
	}
}

// result is what one process cost and delivered.
type result struct {
	peer       string
	cpuSeconds float64
	peakRSS    int64 // bytes
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

	var results []result
	for _, peer := range strings.Split(o.peers, ",") {
		logger.Info("running", "peer", peer, "duration", o.duration)
		r, err := runPeer(ctx, o, bin, dir, vmURL, peer, addrs, logger)
		if err != nil {
			return fmt.Errorf("%s: %w", peer, err)
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

func start(ctx context.Context, logPath, name string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
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
	p, err := start(ctx, filepath.Join(dir, "vm.log"), filepath.Join(bin, "victoria-metrics"),
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

func config(o options, vmURL, peer string, addrs []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  external_labels:\n    bench: %s\n", o.interval, min(o.interval, 10*time.Second), peer)
	fmt.Fprintf(&b, "scrape_configs:\n- job_name: node\n  static_configs:\n  - targets:\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "    - %s\n", a)
	}
	fmt.Fprintf(&b, "remote_write:\n- url: %s/api/v1/write\n", vmURL)
	return b.String()
}

func runPeer(ctx context.Context, o options, bin, dir, vmURL, peer string, addrs []string, logger *slog.Logger) (result, error) {
	pdir := filepath.Join(dir, peer)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return result{}, err
	}
	cfg := filepath.Join(pdir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config(o, vmURL, peer, addrs)), 0o644); err != nil {
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
	switch peer {
	case "shardscrape":
		name = filepath.Join(bin, "scraper")
		args = []string{"--config.file=" + cfg, "--storage.path=" + filepath.Join(pdir, "data"), "--web.listen-address=" + web}
	case "prometheus-agent":
		name = filepath.Join(bin, "prometheus")
		args = []string{"--agent", "--config.file=" + cfg, "--storage.agent.path=" + filepath.Join(pdir, "data"), "--web.listen-address=" + web}
	case "vmagent":
		name = filepath.Join(bin, "vmagent")
		args = []string{"-promscrape.config=" + cfg, "-remoteWrite.url=" + vmURL + "/api/v1/write",
			"-remoteWrite.tmpDataPath=" + filepath.Join(pdir, "data"), "-httpListenAddr=" + web}
		ready = "http://" + web + "/health"
	default:
		return result{}, fmt.Errorf("unknown peer %q", peer)
	}
	p, err := start(ctx, filepath.Join(pdir, "log"), name, args...)
	if err != nil {
		return result{}, err
	}
	defer p.stop()
	if err := waitHTTP(ctx, ready, p); err != nil {
		return result{}, err
	}
	begin := time.Now()
	logger.Info("ready", "peer", peer, "pid", p.cmd.Process.Pid)
	select {
	case <-ctx.Done():
		return result{}, ctx.Err()
	case <-time.After(o.duration):
	}
	cpu, rss, err := usage(p.cmd.Process.Pid)
	if err != nil {
		return result{}, err
	}
	p.stop() // flushes the remote-write queue
	logger.Info("stopped", "peer", peer, "cpu_seconds", cpu, "peak_rss", rss)
	window := time.Since(begin) + time.Minute
	samples, err := countSamples(ctx, vmURL, peer, window)
	if err != nil {
		return result{}, err
	}
	return result{
		peer: peer, cpuSeconds: cpu, peakRSS: rss, samples: samples,
		expected: float64(len(addrs)*o.series) * o.duration.Seconds() / o.interval.Seconds(),
	}, nil
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
	fmt.Fprintln(w, "| process\t CPU s\t CPU s / M samples\t peak RSS MiB\t RSS bytes / series\t samples arrived\t of expected\t")
	fmt.Fprintln(w, "|---\t---\t---\t---\t---\t---\t---\t")
	for _, r := range rs {
		perM := r.cpuSeconds / (r.samples / 1e6)
		fmt.Fprintf(w, "| %s\t %.1f\t %.2f\t %.0f\t %.0f\t %.0f\t %.3f\t\n", r.peer, r.cpuSeconds, perM,
			float64(r.peakRSS)/(1<<20), float64(r.peakRSS)/float64(o.targets*o.series), r.samples, r.samples/r.expected)
	}
	w.Flush()
	if len(rs) > 1 {
		fmt.Fprintln(&b)
		base := rs[0]
		for _, r := range rs[1:] {
			fmt.Fprintf(&b, "%s vs %s: samples per CPU-second %.2f×, peak RSS %.2f×\n", base.peer, r.peer,
				(base.samples/base.cpuSeconds)/(r.samples/r.cpuSeconds), float64(base.peakRSS)/float64(r.peakRSS))
		}
	}
	return b.String()
}
