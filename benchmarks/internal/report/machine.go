// Package report holds the small pieces the benchmark commands share when they
// write their results: a description of the machine, the version of a binary
// under test, GitHub markdown tables, the results file name and number
// formatting.
package report

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes the host a benchmark ran on, read from /proc and the runtime.
type Machine struct {
	CPUModel  string
	Cores     int
	MemTotal  uint64 // bytes
	Kernel    string
	GoVersion string
	Load1     float64 // 1-minute load average at Detect
}

// Detect reads the machine description from /proc/cpuinfo ("model name"),
// runtime.NumCPU, /proc/meminfo (MemTotal), /proc/sys/kernel/osrelease,
// runtime.Version and /proc/loadavg. A file that is missing or unreadable
// leaves its fields at their zero values; Detect never fails.
func Detect() Machine {
	return detect(os.DirFS("/"))
}

// detect reads the /proc files below fsys (paths without the leading slash).
func detect(fsys fs.FS) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := fs.ReadFile(fsys, "proc/cpuinfo"); err == nil {
		m.CPUModel = procField(b, "model name")
	}
	if b, err := fs.ReadFile(fsys, "proc/meminfo"); err == nil {
		// "MemTotal:       24684092 kB"
		f := strings.Fields(procField(b, "MemTotal"))
		if len(f) > 0 {
			if kb, err := strconv.ParseUint(f[0], 10, 64); err == nil {
				m.MemTotal = kb * 1024
				if len(f) > 1 && f[1] != "kB" {
					m.MemTotal = kb // a unit other than kB is not in the kernel's format; take bytes
				}
			}
		}
	}
	if b, err := fs.ReadFile(fsys, "proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := fs.ReadFile(fsys, "proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				m.Load1 = v
			}
		}
	}
	return m
}

// procField returns the trimmed value of the first "key: value" line of a
// /proc file whose key is key, or "".
func procField(b []byte, key string) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Markdown renders the machine as a short markdown bullet list.
func (m Machine) Markdown() string {
	var b strings.Builder
	orUnknown := func(s string) string {
		if s == "" {
			return "unknown"
		}
		return s
	}
	fmt.Fprintf(&b, "- CPU: %s\n", orUnknown(m.CPUModel))
	fmt.Fprintf(&b, "- Cores: %d\n", m.Cores)
	fmt.Fprintf(&b, "- Memory: %s GiB\n", strconv.FormatFloat(float64(m.MemTotal)/(1<<30), 'f', 1, 64))
	fmt.Fprintf(&b, "- Kernel: %s\n", orUnknown(m.Kernel))
	fmt.Fprintf(&b, "- Go: %s\n", orUnknown(m.GoVersion))
	fmt.Fprintf(&b, "- Load (1 min) at start: %s\n", strconv.FormatFloat(m.Load1, 'f', 2, 64))
	return b.String()
}

// versionTimeout bounds each run of a binary by Version.
const versionTimeout = 10 * time.Second

// Version runs `binary --version` (and `binary -version` when that fails or
// prints nothing), each with a 10 s timeout, and returns the first non-empty
// line it printed (stdout first, then stderr), trimmed. VictoriaMetrics and
// vmagent print e.g. "victoria-metrics-20250...-v1.151.0-..." and Prometheus
// prints "prometheus, version 3.x.y ...".
//
// Binaries built with `go install` carry no version in their --version output
// (Prometheus prints "prometheus, version  (branch: , ...)" and vmagent an
// empty line). When the line holds no digit, or nothing was printed, Version
// returns the main module's path and version from the binary's Go build
// information instead, e.g. "github.com/prometheus/prometheus v0.316.0".
// When nothing works it returns "unknown: <err>".
func Version(binary string) string {
	line, runErr := versionLine(binary, "--version")
	if line == "" {
		var err error
		if line, err = versionLine(binary, "-version"); runErr == nil {
			runErr = err
		}
	}
	if line != "" && strings.ContainsAny(line, "0123456789") {
		return line
	}
	if bi := buildVersion(binary); bi != "" {
		return bi
	}
	if line != "" {
		return line
	}
	if runErr == nil {
		runErr = fmt.Errorf("%s printed no version", binary)
	}
	return "unknown: " + runErr.Error()
}

// versionLine runs binary with flag and returns the first non-empty line of
// its stdout, else of its stderr. A non-zero exit is an error only when
// nothing was printed.
func versionLine(binary, flag string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), versionTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, flag)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second // a child holding the pipes must not outlive the timeout
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return "", fmt.Errorf("run %s %s: %w", binary, flag, ctx.Err())
	}
	if runErr != nil {
		// A flag error ("unknown flag") goes to stderr with a non-zero exit:
		// that is not a version.
		if l := firstLine(stdout.Bytes()); l != "" {
			return l, nil
		}
		return "", fmt.Errorf("run %s %s: %w", binary, flag, runErr)
	}
	if l := firstLine(stdout.Bytes()); l != "" {
		return l, nil
	}
	return firstLine(stderr.Bytes()), nil
}

func firstLine(b []byte) string {
	for l := range strings.Lines(string(b)) {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}

// buildVersion returns "<main module path> <version>" from a Go binary's
// build information, or "" when it has none worth reporting.
func buildVersion(binary string) string {
	path, err := exec.LookPath(binary)
	if err != nil {
		return ""
	}
	bi, err := buildinfo.ReadFile(path)
	if err != nil || bi.Main.Path == "" || bi.Main.Version == "" || bi.Main.Version == "(devel)" {
		return ""
	}
	return bi.Main.Path + " " + bi.Main.Version
}
