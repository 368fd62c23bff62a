package report

import (
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Table is a GitHub markdown table.
type Table struct {
	Header []string
	Rows   [][]string
}

// Add appends a row.
func (t *Table) Add(cells ...string) {
	t.Rows = append(t.Rows, cells)
}

// Markdown renders the table in GitHub markdown with every column padded to
// its widest cell. A '|' in a cell is escaped as "\|" and line breaks become
// spaces; rows shorter than the widest row are padded with empty cells.
func (t Table) Markdown() string {
	ncol := len(t.Header)
	for _, r := range t.Rows {
		ncol = max(ncol, len(r))
	}
	if ncol == 0 {
		return ""
	}
	cells := func(r []string) []string {
		out := make([]string, ncol)
		for i := range r {
			out[i] = escapeCell(r[i])
		}
		return out
	}
	header := cells(t.Header)
	rows := make([][]string, len(t.Rows))
	width := make([]int, ncol)
	for i := range width {
		width[i] = max(3, utf8.RuneCountInString(header[i]))
	}
	for i, r := range t.Rows {
		rows[i] = cells(r)
		for j, c := range rows[i] {
			width[j] = max(width[j], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	line := func(r []string) {
		b.WriteByte('|')
		for j, c := range r {
			b.WriteByte(' ')
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", width[j]-utf8.RuneCountInString(c)))
			b.WriteString(" |")
		}
		b.WriteByte('\n')
	}
	line(header)
	sep := make([]string, ncol)
	for j := range sep {
		sep[j] = strings.Repeat("-", width[j])
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
	return b.String()
}

var cellEscaper = strings.NewReplacer("|", `\|`, "\r\n", " ", "\n", " ", "\r", " ")

func escapeCell(s string) string { return cellEscaper.Replace(s) }

// FileName returns the results file for a scenario run at t:
// dir/<UTC date>-<scenario>.md.
func FileName(dir, scenario string, t time.Time) string {
	return filepath.Join(dir, t.UTC().Format("2006-01-02")+"-"+scenario+".md")
}

// Ratio formats a/b with two decimals and a multiplication sign, "1.23×".
// It returns "n/a" when b is 0 or either value is NaN or infinite.
func Ratio(a, b float64) string {
	if b == 0 || !finite(a) || !finite(b) {
		return "n/a"
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64) + "×"
}

// Float formats v with digits decimals (negative digits count as 0), grouping
// the integer part in thousands with commas when |v| >= 10000
// ("1,234,567"). NaN is "n/a"; infinities are "+Inf" and "-Inf".
func Float(v float64, digits int) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	if math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	digits = max(digits, 0)
	s := strconv.FormatFloat(v, 'f', digits, 64)
	if math.Abs(v) < 10000 {
		return s
	}
	sign := ""
	if s[0] == '-' {
		sign, s = "-", s[1:]
	}
	intPart, frac, hasFrac := strings.Cut(s, ".")
	var b strings.Builder
	b.WriteString(sign)
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if hasFrac {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	return b.String()
}

var byteUnits = []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// Bytes formats a byte count in binary units: "812 B", "3.1 KiB",
// "216 MiB", "1.4 GiB". Values below 10 of their unit keep one decimal.
// NaN is "n/a"; negative counts keep their sign.
func Bytes(n float64) string {
	if math.IsNaN(n) {
		return "n/a"
	}
	if math.IsInf(n, 0) {
		return strconv.FormatFloat(n, 'f', -1, 64) + " B"
	}
	sign := ""
	if n < 0 {
		sign, n = "-", -n
	}
	if math.Round(n) < 1024 {
		return sign + strconv.FormatFloat(n, 'f', 0, 64) + " B"
	}
	u := 0
	for u < len(byteUnits)-1 && n >= 1024 {
		n /= 1024
		u++
	}
	switch {
	case n < 9.95:
		return sign + strconv.FormatFloat(n, 'f', 1, 64) + " " + byteUnits[u]
	case math.Round(n) >= 1024 && u < len(byteUnits)-1: // 1023.7 KiB is 1.0 MiB
		return sign + "1.0 " + byteUnits[u+1]
	default:
		return sign + strconv.FormatFloat(n, 'f', 0, 64) + " " + byteUnits[u]
	}
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
