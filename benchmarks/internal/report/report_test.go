package report

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestTableMarkdown(t *testing.T) {
	tab := Table{Header: []string{"program", "CPU s", "ratio"}}
	tab.Add("shardscrape", "12.5", Ratio(12.5, 25))
	tab.Add("a|b", "1")
	tab.Add("two\nlines", "3", "x", "extra")
	got := tab.Markdown()
	require.Equal(t, ""+
		"| program     | CPU s | ratio |       |\n"+
		"| ----------- | ----- | ----- | ----- |\n"+
		"| shardscrape | 12.5  | 0.50× |       |\n"+
		"| a\\|b        | 1     |       |       |\n"+
		"| two lines   | 3     | x     | extra |\n", got)
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	// Every line has the same rune width and the same column boundaries.
	for _, l := range lines {
		require.Equal(t, utf8.RuneCountInString(lines[0]), utf8.RuneCountInString(l), "line %q", l)
	}
	require.Contains(t, got, `| a\|b `)
	require.Contains(t, got, "| two lines ")
	require.Contains(t, got, "| extra |")
}

func TestTableMarkdownAlignment(t *testing.T) {
	tab := Table{Header: []string{"a", "bb"}}
	tab.Add("long cell", "×")
	require.Equal(t, ""+
		"| a         | bb  |\n"+
		"| --------- | --- |\n"+
		"| long cell | ×   |\n", tab.Markdown())
	require.Empty(t, Table{}.Markdown())
}

func TestFileName(t *testing.T) {
	at := time.Date(2026, 11, 25, 23, 30, 0, 0, time.FixedZone("x", -3*3600)) // 02:30 UTC next day
	require.Equal(t, filepath.Join("results", "2026-11-26-worker-vs-agent.md"), FileName("results", "worker-vs-agent", at))
}

func TestRatio(t *testing.T) {
	for _, c := range []struct {
		a, b float64
		want string
	}{
		{1.234, 1, "1.23×"},
		{1, 3, "0.33×"},
		{0, 5, "0.00×"},
		{1, 0, "n/a"},
		{math.NaN(), 1, "n/a"},
		{1, math.NaN(), "n/a"},
		{math.Inf(1), 1, "n/a"},
		{-2, 1, "-2.00×"},
	} {
		require.Equal(t, c.want, Ratio(c.a, c.b), "Ratio(%v, %v)", c.a, c.b)
	}
}

func TestFloat(t *testing.T) {
	for _, c := range []struct {
		v      float64
		digits int
		want   string
	}{
		{1234567, 0, "1,234,567"},
		{1234567.891, 2, "1,234,567.89"},
		{-1234567, 0, "-1,234,567"},
		{9999.5, 1, "9999.5"},
		{10000, 0, "10,000"},
		{100000, 0, "100,000"},
		{999999.6, 0, "1,000,000"},
		{3.14159, 2, "3.14"},
		{0.5, -1, "0"},
		{math.NaN(), 2, "n/a"},
		{math.Inf(-1), 2, "-Inf"},
	} {
		require.Equal(t, c.want, Float(c.v, c.digits), "Float(%v, %d)", c.v, c.digits)
	}
}

func TestBytes(t *testing.T) {
	for _, c := range []struct {
		n    float64
		want string
	}{
		{0, "0 B"},
		{812, "812 B"},
		{1023, "1023 B"},
		{1023.6, "1.0 KiB"},
		{1024, "1.0 KiB"},
		{3.1 * 1024, "3.1 KiB"},
		{216 * 1 << 20, "216 MiB"},
		{1.4 * (1 << 30), "1.4 GiB"},
		{1023.7 * (1 << 20), "1.0 GiB"},
		{12.4 * (1 << 20), "12 MiB"},
		{-2048, "-2.0 KiB"},
		{math.NaN(), "n/a"},
		{1 << 62, "4.0 EiB"},
	} {
		require.Equal(t, c.want, Bytes(c.n), "Bytes(%v)", c.n)
	}
}

func TestDetect(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	m := Detect()
	require.Positive(t, m.Cores)
	require.Positive(t, m.MemTotal)
	require.NotEmpty(t, m.Kernel)
	require.Equal(t, runtime.Version(), m.GoVersion)
	md := m.Markdown()
	require.Contains(t, md, "- Cores: ")
	require.Contains(t, md, " GiB\n")
	require.Contains(t, md, m.Kernel)
}

func TestDetectFiles(t *testing.T) {
	m := detect(fstest.MapFS{
		"proc/cpuinfo":              {Data: []byte("processor\t: 0\nmodel name\t: Test CPU @ 2.0GHz\n\nprocessor\t: 1\nmodel name\t: Test CPU @ 2.0GHz\n")},
		"proc/meminfo":              {Data: []byte("MemTotal:       24684092 kB\nMemFree:  1 kB\n")},
		"proc/sys/kernel/osrelease": {Data: []byte("6.18.44\n")},
		"proc/loadavg":              {Data: []byte("1.68 0.96 1.09 6/117 15321\n")},
	})
	require.Equal(t, "Test CPU @ 2.0GHz", m.CPUModel)
	require.Equal(t, uint64(24684092*1024), m.MemTotal)
	require.Equal(t, "6.18.44", m.Kernel)
	require.InDelta(t, 1.68, m.Load1, 1e-9)

	// Missing and garbled files leave zero values.
	m = detect(fstest.MapFS{"proc/loadavg": {Data: []byte("garbage")}, "proc/meminfo": {Data: []byte("MemTotal: lots")}})
	require.Empty(t, m.CPUModel)
	require.Zero(t, m.MemTotal)
	require.Empty(t, m.Kernel)
	require.Zero(t, m.Load1)
	require.Positive(t, m.Cores)
	require.Contains(t, m.Markdown(), "- CPU: unknown\n")
}

func TestVersionMissing(t *testing.T) {
	v := Version(filepath.Join(t.TempDir(), "no-such-binary"))
	require.True(t, strings.HasPrefix(v, "unknown: "), v)
}

// buildProgram compiles a Go program into dir and returns its path.
func buildProgram(t *testing.T, dir, src string) string {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/fake\n\ngo 1.26\n"), 0o644))
	bin := filepath.Join(dir, "fake")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

func TestVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	// Answers only to -version, after blank lines, like the Go flag package
	// would with a custom flag; --version is an error with output on stderr.
	bin := buildProgram(t, t.TempDir(), `package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-version" {
		fmt.Println()
		fmt.Println("   victoria-metrics-20250101-000000-tags-v1.151.0-0-gabc  ")
		fmt.Println("second line")
		return
	}
	fmt.Fprintln(os.Stderr, "unknown flag", os.Args[1:])
	os.Exit(2)
}
`)
	require.Equal(t, "victoria-metrics-20250101-000000-tags-v1.151.0-0-gabc", Version(bin))

	// A binary that prints no version and carries no module version.
	silent := buildProgram(t, t.TempDir(), "package main\n\nfunc main() {}\n")
	require.True(t, strings.HasPrefix(Version(silent), "unknown: "), Version(silent))
}

func TestVersionBuildInfo(t *testing.T) {
	// The receivers `make receivers` installs are built without version
	// stamps; their module version comes from the build information.
	bin := filepath.Join("..", "..", "..", "bin", "vmagent")
	if _, err := os.Stat(bin); err != nil {
		t.Skip("bin/vmagent not installed (make receivers)")
	}
	v := Version(bin)
	require.True(t, strings.HasPrefix(v, "github.com/VictoriaMetrics/VictoriaMetrics v1.") || strings.Contains(v, "v1."), v)
}

func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	// A "(devel)" build printing no version: named by module path, the
	// file's SHA-256 and its Go version; two different builds differ.
	a := buildProgram(t, t.TempDir(), "package main\n\nfunc main() {}\n")
	b := buildProgram(t, t.TempDir(), "package main\n\nfunc main() { println() }\n")
	va, vb := Build(a), Build(b)
	require.True(t, strings.HasPrefix(va, "example.com/fake, "), va)
	require.Regexp(t, `sha256 [0-9a-f]{12}, go1\.`, va)
	require.NotEqual(t, va, vb)
	require.True(t, strings.HasPrefix(Build(filepath.Join(t.TempDir(), "missing")), "unknown: "))
}
