package chart

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// element is one parsed SVG element with its attributes and text.
type element struct {
	name  string
	attrs map[string]string
	text  string
	// series is the data-name of the enclosing series group, if any.
	series string
}

// parse decodes an SVG document with encoding/xml, failing the test on any
// XML error, and returns its elements in document order.
func parse(t *testing.T, doc []byte) []*element {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	dec.Strict = true
	var (
		out    []*element
		stack  []*element
		series []string
	)
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		switch tok := tok.(type) {
		case xml.StartElement:
			e := &element{name: tok.Name.Local, attrs: map[string]string{}}
			for _, a := range tok.Attr {
				e.attrs[a.Name.Local] = a.Value
			}
			if e.attrs["class"] == "series" {
				series = append(series, e.attrs["data-name"])
			} else if len(stack) > 0 && stack[len(stack)-1].attrs["class"] == "series" {
				e.series = series[len(series)-1]
			}
			out = append(out, e)
			stack = append(stack, e)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text += string(tok)
			}
		}
	}
	require.Empty(t, stack)
	require.Equal(t, "svg", out[0].name)
	return out
}

func byClass(els []*element, class string) []*element {
	var out []*element
	for _, e := range els {
		if e.attrs["class"] == class {
			out = append(out, e)
		}
	}
	return out
}

// translate returns the (x, y) of a transform="translate(x,y)".
func translate(t *testing.T, s string) (float64, float64) {
	t.Helper()
	s, ok := strings.CutPrefix(s, "translate(")
	require.True(t, ok, s)
	xs, ys, ok := strings.Cut(strings.TrimSuffix(s, ")"), ",")
	require.True(t, ok, s)
	x, err := strconv.ParseFloat(xs, 64)
	require.NoError(t, err)
	y, err := strconv.ParseFloat(ys, 64)
	require.NoError(t, err)
	return x, y
}

func sweep() Chart {
	return Chart{
		Title: "samples per CPU-second <&>", XLabel: "targets", YLabel: "samples/s \"per\" CPU-s",
		LogX: true,
		Series: []Series{
			{Name: "shardscrape", X: []float64{200, 400, 800, 1600, 3200}, Y: []float64{9e5, 1.1e6, 1.2e6, 1.15e6, 1.3e6}},
			{Name: "prometheus agent", X: []float64{200, 400, 800, 1600, 3200}, Y: []float64{4e5, 4.2e5, 4.5e5, 4.4e5, 4.6e5}},
			{Name: "vmagent <&>", X: []float64{200, 400, 800}, Y: []float64{7e5, 6.5e5, 6e5}},
			{Name: "one point", X: []float64{1600}, Y: []float64{8e5}},
		},
	}
}

func TestSVGStructure(t *testing.T) {
	c := sweep()
	doc, err := c.SVG()
	require.NoError(t, err)
	els := parse(t, doc)
	require.Equal(t, "640", els[0].attrs["width"])
	require.Equal(t, "400", els[0].attrs["height"])

	lines := byClass(els, "line")
	require.Len(t, lines, len(c.Series))
	marks := byClass(els, "marker")
	total := 0
	for _, s := range c.Series {
		total += len(s.X)
	}
	require.Len(t, marks, total)
	require.Len(t, byClass(els, "legend-marker"), len(c.Series))

	// Escaped text comes back as written.
	require.Equal(t, c.Title, byClass(els, "title")[0].text)
	require.Equal(t, c.YLabel, byClass(els, "y-label")[0].text)
	require.Equal(t, c.XLabel, byClass(els, "x-label")[0].text)
	var legend []string
	for _, e := range els {
		if e.name == "text" && strings.Contains(e.text, "vmagent") {
			legend = append(legend, e.text)
		}
	}
	require.Equal(t, []string{"vmagent <&>"}, legend)

	// Markers map values monotonically to pixels: X grows to the right, Y up.
	type pt struct{ v, px float64 }
	var xsAll, ysAll []pt
	colours := map[string]bool{}
	for si, s := range c.Series {
		var ms []*element
		for _, m := range marks {
			if m.series == s.Name {
				ms = append(ms, m)
			}
		}
		require.Len(t, ms, len(s.X), s.Name)
		for j, m := range ms {
			x, y := translate(t, m.attrs["transform"])
			xsAll = append(xsAll, pt{s.X[j], x})
			ysAll = append(ysAll, pt{s.Y[j], y})
		}
		require.Equal(t, len(s.X), len(strings.Fields(lines[si].attrs["points"])), s.Name)
	}
	for _, g := range byClass(els, "series") {
		colours[g.attrs["stroke"]] = true
	}
	require.Len(t, colours, len(c.Series), "distinct colours")
	for _, a := range xsAll {
		for _, b := range xsAll {
			if a.v < b.v {
				require.Less(t, a.px, b.px, "x %v < %v", a.v, b.v)
			}
			if a.v == b.v {
				require.InDelta(t, a.px, b.px, 1e-9)
			}
		}
	}
	for _, a := range ysAll {
		for _, b := range ysAll {
			if a.v < b.v {
				require.Greater(t, a.px, b.px, "y %v < %v", a.v, b.v)
			}
		}
	}
	// Every point lies inside the frame.
	frame := byClass(els, "frame")[0]
	fx, _ := strconv.ParseFloat(frame.attrs["x"], 64)
	fy, _ := strconv.ParseFloat(frame.attrs["y"], 64)
	fw, _ := strconv.ParseFloat(frame.attrs["width"], 64)
	fh, _ := strconv.ParseFloat(frame.attrs["height"], 64)
	for _, p := range xsAll {
		require.True(t, p.px > fx && p.px < fx+fw, "x pixel %v outside frame", p.px)
	}
	for _, p := range ysAll {
		require.True(t, p.px > fy && p.px < fy+fh, "y pixel %v outside frame", p.px)
	}

	// The log2 X axis has a tick on every sweep point.
	var xticks []string
	for i, e := range els {
		if e.attrs["class"] == "x-axis" {
			for _, f := range els[i+1:] {
				if f.name == "text" {
					xticks = append(xticks, f.text)
				}
				if f.name == "g" {
					break
				}
			}
		}
	}
	require.Equal(t, []string{"200", "400", "800", "1600", "3200"}, xticks)
}

func TestSVGDeterministic(t *testing.T) {
	a, err := sweep().SVG()
	require.NoError(t, err)
	for range 3 {
		b, err := sweep().SVG()
		require.NoError(t, err)
		require.Equal(t, a, b)
	}
	p1, err := Panels("sweep", 2, sweep(), sweep(), sweep())
	require.NoError(t, err)
	p2, err := Panels("sweep", 2, sweep(), sweep(), sweep())
	require.NoError(t, err)
	require.Equal(t, p1, p2)
}

func TestSVGErrors(t *testing.T) {
	ok := Series{Name: "ok", X: []float64{1, 2}, Y: []float64{1, 2}}
	for _, c := range []struct {
		name  string
		chart Chart
		want  string
	}{
		{"no series", Chart{Title: "t"}, "no series"},
		{"length", Chart{Series: []Series{ok, {Name: "bad", X: []float64{1, 2}, Y: []float64{1}}}}, `"bad": 2 X values but 1 Y values`},
		{"empty", Chart{Series: []Series{{Name: "bad"}}}, `"bad": no points`},
		{"nan", Chart{Series: []Series{{Name: "bad", X: []float64{1}, Y: []float64{math.NaN()}}}}, `"bad": Y[0] is NaN`},
		{"inf", Chart{Series: []Series{{Name: "bad", X: []float64{math.Inf(1)}, Y: []float64{1}}}}, `"bad": X[0] is +Inf`},
		{"log x", Chart{LogX: true, Series: []Series{ok, {Name: "bad", X: []float64{1, 0}, Y: []float64{1, 1}}}}, `"bad": X[1]=0 is not positive on a log X axis`},
		{"log y", Chart{LogY: true, Series: []Series{{Name: "bad", X: []float64{-1}, Y: []float64{-3}}}}, `"bad": Y[0]=-3 is not positive on a log Y axis`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.chart.SVG()
			require.ErrorContains(t, err, c.want)
			_, err = Panels("p", 1, Chart{Series: []Series{ok}}, c.chart)
			require.ErrorContains(t, err, "panel 1: ")
			require.ErrorContains(t, err, c.want)
		})
	}
	_, err := Panels("p", 1)
	require.Error(t, err)
	_, err = Panels("p", 0, Chart{Series: []Series{ok}})
	require.Error(t, err)
}

func TestSinglePointAndFlat(t *testing.T) {
	for _, c := range []Chart{
		{Series: []Series{{Name: "one", X: []float64{5}, Y: []float64{0}}}},
		{LogX: true, LogY: true, Series: []Series{{Name: "one", X: []float64{200}, Y: []float64{3}}}},
		{YFromZero: true, Series: []Series{{Name: "flat", X: []float64{1, 2, 3}, Y: []float64{7, 7, 7}}}},
		{Width: 200, Height: 150, Series: []Series{{Name: "tiny", X: []float64{-1e9, 1e9}, Y: []float64{-0.001, 0.001}}}},
	} {
		doc, err := c.SVG()
		require.NoError(t, err)
		els := parse(t, doc)
		ms := byClass(els, "marker")
		require.Len(t, ms, len(c.Series[0].X))
		x, y := translate(t, ms[0].attrs["transform"])
		w, _ := strconv.ParseFloat(els[0].attrs["width"], 64)
		h, _ := strconv.ParseFloat(els[0].attrs["height"], 64)
		require.True(t, x > 0 && x < w && y > 0 && y < h, "marker at %v,%v outside %vx%v", x, y, w, h)
	}
}

func TestPanels(t *testing.T) {
	lat := sweep()
	lat.Title, lat.LogY = "p99 delay", true
	doc, err := Panels("saturation <sweep>", 2, sweep(), lat, sweep())
	require.NoError(t, err)
	els := parse(t, doc)
	require.Equal(t, "1280", els[0].attrs["width"])
	require.Equal(t, strconv.Itoa(36+2*400), els[0].attrs["height"])
	require.Equal(t, "saturation <sweep>", byClass(els, "panels-title")[0].text)
	charts := byClass(els, "chart")
	require.Len(t, charts, 3)
	require.Equal(t, "translate(0,36)", charts[0].attrs["transform"])
	require.Equal(t, "translate(640,36)", charts[1].attrs["transform"])
	require.Equal(t, "translate(0,436)", charts[2].attrs["transform"])
	require.Len(t, byClass(els, "line"), 3*len(sweep().Series))
}

// Example-style test: writes a panel of the saturation sweep to a temp dir.
func TestWriteFile(t *testing.T) {
	c := sweep()
	doc, err := Panels("saturation sweep", 2, c, c)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "sweep.svg")
	require.NoError(t, os.WriteFile(path, doc, 0o644))
	if dir := os.Getenv("CHART_TEST_OUT"); dir != "" { // to look at it: CHART_TEST_OUT=/tmp go test
		require.NoError(t, os.WriteFile(filepath.Join(dir, "sweep.svg"), doc, 0o644))
	}
	back, err := os.ReadFile(path)
	require.NoError(t, err)
	parse(t, back)
}
