// Package chart draws the benchmark results as SVG line charts: a few series
// of (x, y) points, each drawn as markers joined by a line, on linear or
// logarithmic axes with 1-2-5 (or power-of-two) ticks, a legend and titles.
// The output is plain SVG 1.1 text, deterministic for a given input.
package chart

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Series is one line of a chart: its points are drawn in the order given.
type Series struct {
	Name string
	X, Y []float64
}

// Chart is one line chart.
type Chart struct {
	Title, XLabel, YLabel string
	Series                []Series
	LogX, LogY            bool
	Width, Height         int // pixels; 0 means 640×400

	// YFromZero stretches a linear Y axis to include zero, so that the
	// heights of the lines compare as ratios.
	YFromZero bool
}

const (
	defaultWidth, defaultHeight = 640, 400
	fontSize                    = 12
	charWidth                   = 7.0 // estimated advance of one character at fontSize
	lineHeight                  = 18
	plotPad                     = 10 // pixels between the frame and the outermost ticks
)

// palette is Okabe and Ito's colour-blind-safe set (without its yellow,
// which does not show on white).
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"}

// markers are paths centred on the origin; the last two are stroked only.
var markers = []string{
	"M-4,0A4,4 0 1,0 4,0A4,4 0 1,0 -4,0Z", // circle
	"M-3.5,-3.5H3.5V3.5H-3.5Z",            // square
	"M0,-4.5L4.2,3L-4.2,3Z",               // triangle up
	"M0,-5L4.5,0L0,5L-4.5,0Z",             // diamond
	"M0,4.5L4.2,-3L-4.2,-3Z",              // triangle down
	"M-4,-4L4,4M-4,4L4,-4",                // cross
	"M-5,0H5M0,-5V5",                      // plus
}

// style returns the colour and marker of the i-th series; past seven series
// the marker shifts against the colour, so 49 series stay distinct.
func style(i int) (colour, marker string) {
	return palette[i%len(palette)], markers[(i+i/len(palette))%len(markers)]
}

// SVG renders the chart as a standalone SVG document. It fails, naming the
// series, when a series' X and Y differ in length or are empty, a value is
// NaN or infinite, or a value on a log axis is not positive; and when there
// is no series at all.
func (c Chart) SVG() ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	w, h := c.size()
	var b bytes.Buffer
	header(&b, w, h, c.Title)
	c.render(&b, 0, 0)
	b.WriteString("</svg>\n")
	return b.Bytes(), nil
}

// Panels renders charts in one SVG document, laid out left to right in a
// grid of cols columns under title. Every cell is as large as the largest
// chart.
func Panels(title string, cols int, charts ...Chart) ([]byte, error) {
	if len(charts) == 0 {
		return nil, errors.New("panels: no charts")
	}
	if cols < 1 {
		return nil, fmt.Errorf("panels: %d columns", cols)
	}
	cols = min(cols, len(charts))
	cellW, cellH := 0, 0
	for i, c := range charts {
		if err := c.validate(); err != nil {
			return nil, fmt.Errorf("panel %d: %w", i, err)
		}
		w, h := c.size()
		cellW, cellH = max(cellW, w), max(cellH, h)
	}
	rows := (len(charts) + cols - 1) / cols
	titleH := 0
	if title != "" {
		titleH = 36
	}
	w, h := cols*cellW, titleH+rows*cellH
	var b bytes.Buffer
	header(&b, w, h, title)
	if title != "" {
		fmt.Fprintf(&b, "<text class=\"panels-title\" x=\"%s\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">%s</text>\n", num(float64(w)/2), esc(title))
	}
	for i, c := range charts {
		c.render(&b, (i%cols)*cellW, titleH+(i/cols)*cellH)
	}
	b.WriteString("</svg>\n")
	return b.Bytes(), nil
}

func header(b *bytes.Buffer, w, h int, title string) {
	fmt.Fprintf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"+
		"<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"%d\">\n",
		w, h, w, h, fontSize)
	if title != "" {
		fmt.Fprintf(b, "<title>%s</title>\n", esc(title))
	}
	fmt.Fprintf(b, "<rect width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", w, h)
}

func (c Chart) size() (int, int) {
	w, h := c.Width, c.Height
	if w <= 0 {
		w = defaultWidth
	}
	if h <= 0 {
		h = defaultHeight
	}
	return w, h
}

func (c Chart) validate() error {
	if len(c.Series) == 0 {
		return fmt.Errorf("chart %q: no series", c.Title)
	}
	for _, s := range c.Series {
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("chart %q: series %q: %d X values but %d Y values", c.Title, s.Name, len(s.X), len(s.Y))
		}
		if len(s.X) == 0 {
			return fmt.Errorf("chart %q: series %q: no points", c.Title, s.Name)
		}
		for i := range s.X {
			for _, v := range []struct {
				axis string
				v    float64
				log  bool
			}{{"X", s.X[i], c.LogX}, {"Y", s.Y[i], c.LogY}} {
				if math.IsNaN(v.v) || math.IsInf(v.v, 0) {
					return fmt.Errorf("chart %q: series %q: %s[%d] is %v", c.Title, s.Name, v.axis, i, v.v)
				}
				if v.log && v.v <= 0 {
					return fmt.Errorf("chart %q: series %q: %s[%d]=%v is not positive on a log %s axis", c.Title, s.Name, v.axis, i, v.v, v.axis)
				}
			}
		}
	}
	return nil
}

// axis maps values to pixels between p0 (at lo) and p1 (at hi).
type axis struct {
	log          bool
	lo, hi       float64
	ticks        []float64
	labels       []string
	p0, p1       float64
	maxLabelRune int
}

func newAxis(vals []float64, log, fromZero bool) axis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	a := axis{log: log}
	if log {
		a.lo, a.hi, a.ticks = logTicks(lo, hi)
		a.labels = logLabels(a.ticks)
	} else {
		if fromZero {
			lo, hi = math.Min(lo, 0), math.Max(hi, 0)
		}
		var step float64
		a.lo, a.hi, a.ticks, step = linearTicks(lo, hi)
		a.labels = linearLabels(a.ticks, step)
	}
	for _, l := range a.labels {
		a.maxLabelRune = max(a.maxLabelRune, utf8.RuneCountInString(l))
	}
	return a
}

func (a axis) pos(v float64) float64 {
	var f float64
	if a.log {
		f = math.Log(v/a.lo) / math.Log(a.hi/a.lo)
	} else {
		f = (v - a.lo) / (a.hi - a.lo)
	}
	return a.p0 + f*(a.p1-a.p0)
}

// legendEntry is one series in the legend, placed at x on row.
type legendEntry struct {
	x   float64
	row int
}

// render draws the chart as a group whose top left corner is at (ox, oy).
func (c Chart) render(b *bytes.Buffer, ox, oy int) {
	w, h := c.size()
	var xs, ys []float64
	for _, s := range c.Series {
		xs, ys = append(xs, s.X...), append(ys, s.Y...)
	}
	xa, ya := newAxis(xs, c.LogX, false), newAxis(ys, c.LogY, c.YFromZero)

	top := 12.0
	if c.Title != "" {
		top += 24
	}
	left := 12 + charWidth*float64(ya.maxLabelRune) + 8
	if c.YLabel != "" {
		left += lineHeight + 4
	}
	right := math.Max(16, charWidth*float64(utf8.RuneCountInString(xa.labels[len(xa.labels)-1]))/2+4)

	// The legend flows in rows under the X axis title.
	entries := make([]legendEntry, len(c.Series))
	x, row := left, 0
	for i, s := range c.Series {
		ew := 30 + charWidth*float64(utf8.RuneCountInString(s.Name)) + 16
		if x > left && x+ew > float64(w)-right {
			x, row = left, row+1
		}
		entries[i] = legendEntry{x: x, row: row}
		x += ew
	}
	bottom := 8 + lineHeight + 6 + float64(row+1)*lineHeight + 8
	if c.XLabel != "" {
		bottom += lineHeight + 2
	}
	x0, x1, y0, y1 := left, math.Max(left+10, float64(w)-right), top, math.Max(top+10, float64(h)-bottom)
	xa.p0, xa.p1 = x0+plotPad, x1-plotPad
	ya.p0, ya.p1 = y1-plotPad, y0+plotPad

	fmt.Fprintf(b, "<g class=\"chart\" transform=\"translate(%d,%d)\">\n", ox, oy)
	if c.Title != "" {
		fmt.Fprintf(b, "<text class=\"title\" x=\"%s\" y=\"22\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">%s</text>\n", num(float64(w)/2), esc(c.Title))
	}
	// Grid, frame, ticks and their labels.
	b.WriteString("<g class=\"grid\" stroke=\"#e0e0e0\" stroke-width=\"1\">\n")
	for _, t := range xa.ticks {
		p := num(xa.pos(t))
		fmt.Fprintf(b, "<line x1=\"%s\" y1=\"%s\" x2=\"%s\" y2=\"%s\"/>\n", p, num(y0), p, num(y1))
	}
	for _, t := range ya.ticks {
		p := num(ya.pos(t))
		fmt.Fprintf(b, "<line x1=\"%s\" y1=\"%s\" x2=\"%s\" y2=\"%s\"/>\n", num(x0), p, num(x1), p)
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(b, "<rect class=\"frame\" x=\"%s\" y=\"%s\" width=\"%s\" height=\"%s\" fill=\"none\" stroke=\"#333333\"/>\n", num(x0), num(y0), num(x1-x0), num(y1-y0))
	b.WriteString("<g class=\"x-axis\" text-anchor=\"middle\" fill=\"#333333\">\n")
	for i, t := range xa.ticks {
		p := num(xa.pos(t))
		fmt.Fprintf(b, "<line x1=\"%s\" y1=\"%s\" x2=\"%s\" y2=\"%s\" stroke=\"#333333\"/>", p, num(y1), p, num(y1+5))
		fmt.Fprintf(b, "<text x=\"%s\" y=\"%s\">%s</text>\n", p, num(y1+8+fontSize), esc(xa.labels[i]))
	}
	b.WriteString("</g>\n<g class=\"y-axis\" text-anchor=\"end\" fill=\"#333333\">\n")
	for i, t := range ya.ticks {
		p := ya.pos(t)
		fmt.Fprintf(b, "<line x1=\"%s\" y1=\"%s\" x2=\"%s\" y2=\"%s\" stroke=\"#333333\"/>", num(x0-5), num(p), num(x0), num(p))
		fmt.Fprintf(b, "<text x=\"%s\" y=\"%s\">%s</text>\n", num(x0-8), num(p+4), esc(ya.labels[i]))
	}
	b.WriteString("</g>\n")
	legendTop := y1 + 8 + lineHeight + 6
	if c.XLabel != "" {
		fmt.Fprintf(b, "<text class=\"x-label\" x=\"%s\" y=\"%s\" text-anchor=\"middle\">%s</text>\n", num((x0+x1)/2), num(legendTop+4), esc(c.XLabel))
		legendTop += lineHeight + 2
	}
	if c.YLabel != "" {
		lx, ly := float64(12+fontSize), (y0+y1)/2
		fmt.Fprintf(b, "<text class=\"y-label\" x=\"%s\" y=\"%s\" text-anchor=\"middle\" transform=\"rotate(-90 %s %s)\">%s</text>\n", num(lx), num(ly), num(lx), num(ly), esc(c.YLabel))
	}

	// The series: a line through the points, then a marker on each.
	for i, s := range c.Series {
		colour, marker := style(i)
		fmt.Fprintf(b, "<g class=\"series\" data-name=\"%s\" stroke=\"%s\" fill=\"%s\">\n", esc(s.Name), colour, colour)
		b.WriteString("<polyline class=\"line\" fill=\"none\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"")
		for j := range s.X {
			if j > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(num(xa.pos(s.X[j])) + "," + num(ya.pos(s.Y[j])))
		}
		b.WriteString("\"/>\n")
		for j := range s.X {
			fmt.Fprintf(b, "<path class=\"marker\" stroke-width=\"1.5\" transform=\"translate(%s,%s)\" d=\"%s\"/>\n", num(xa.pos(s.X[j])), num(ya.pos(s.Y[j])), marker)
		}
		b.WriteString("</g>\n")
	}

	// The legend.
	b.WriteString("<g class=\"legend\">\n")
	for i, s := range c.Series {
		colour, marker := style(i)
		e := entries[i]
		y := legendTop + float64(e.row)*lineHeight + 4
		fmt.Fprintf(b, "<g class=\"legend-entry\" stroke=\"%s\" fill=\"%s\"><line x1=\"%s\" y1=\"%s\" x2=\"%s\" y2=\"%s\" stroke-width=\"2\"/>", colour, colour, num(e.x), num(y), num(e.x+24), num(y))
		fmt.Fprintf(b, "<path class=\"legend-marker\" stroke-width=\"1.5\" transform=\"translate(%s,%s)\" d=\"%s\"/>", num(e.x+12), num(y), marker)
		fmt.Fprintf(b, "<text x=\"%s\" y=\"%s\" stroke=\"none\" fill=\"#333333\">%s</text></g>\n", num(e.x+30), num(y+4), esc(s.Name))
	}
	b.WriteString("</g>\n</g>\n")
}

// num formats a pixel coordinate with at most two decimals.
func num(v float64) string {
	s := strconv.FormatFloat(v, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		s = "0"
	}
	return s
}

// esc escapes text for XML character data and attribute values.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder does not fail
	return b.String()
}
