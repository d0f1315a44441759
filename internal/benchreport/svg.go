package main

import (
	"fmt"
	"math"
	"strings"
)

// Hand-written SVG charts: a categorical x axis with lines or grouped bars,
// and horizontal rows of bars or dots; every value drawn with its 95%
// interval as an error bar. No dependency beyond the standard library.

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"}

type series struct {
	name string
	pts  []est // one per category; a zero est is not drawn
}

// axis maps values to pixels on a linear or logarithmic scale.
type axis struct {
	lo, hi  float64 // data range (log10 of it when log)
	log     bool
	p0, p1  float64 // pixel range
	ticks   []float64
	tickFmt func(float64) string
}

func newAxis(min, max float64, log bool, p0, p1 float64, format func(float64) string) axis {
	a := axis{log: log, p0: p0, p1: p1, tickFmt: format}
	if log {
		min, max = math.Max(min, 1e-12), math.Max(max, 1e-12)
		a.lo, a.hi = math.Floor(math.Log10(min)), math.Ceil(math.Log10(max))
		if a.hi == a.lo {
			a.hi++
		}
		for e := a.lo; e <= a.hi; e++ {
			a.ticks = append(a.ticks, math.Pow(10, e))
		}
		return a
	}
	if min > 0 {
		min = 0
	}
	if max <= min {
		max = min + 1
	}
	step := niceStep((max - min) / 5)
	a.lo, a.hi = math.Floor(min/step)*step, math.Ceil(max/step)*step
	for v := a.lo; v <= a.hi+step/2; v += step {
		a.ticks = append(a.ticks, v)
	}
	return a
}

func niceStep(raw float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func (a axis) px(v float64) float64 {
	if a.log {
		v = math.Log10(math.Max(v, 1e-12))
	}
	return a.p0 + (v-a.lo)/(a.hi-a.lo)*(a.p1-a.p0)
}

type svgDoc struct {
	b    strings.Builder
	w, h int
}

func newSVG(w, h int, title string) *svgDoc {
	d := &svgDoc{w: w, h: h}
	fmt.Fprintf(&d.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&d.b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	d.text(float64(w)/2, 20, "middle", "font-size=\"14\" font-weight=\"bold\"", title)
	return d
}

func (d *svgDoc) text(x, y float64, anchor, attrs, s string) {
	fmt.Fprintf(&d.b, `<text x="%.1f" y="%.1f" text-anchor="%s" %s>%s</text>`+"\n", x, y, anchor, attrs, xmlEscape(s))
}

func (d *svgDoc) line(x1, y1, x2, y2 float64, stroke string, width float64, extra string) {
	fmt.Fprintf(&d.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f" %s/>`+"\n", x1, y1, x2, y2, stroke, width, extra)
}

func (d *svgDoc) String() string { return d.b.String() + "</svg>\n" }

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// legend draws the series names at the top right.
func (d *svgDoc) legend(x, y float64, names []string) {
	for i, n := range names {
		yy := y + float64(i)*16
		fmt.Fprintf(&d.b, `<rect x="%.1f" y="%.1f" width="12" height="10" fill="%s"/>`+"\n", x, yy-9, palette[i%len(palette)])
		d.text(x+16, yy, "start", "", n)
	}
}

func estRange(ss []series) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, p := range s.pts {
			if p.ok() {
				lo, hi = math.Min(lo, math.Min(p.lo, p.mean)), math.Max(hi, math.Max(p.hi, p.mean))
			}
		}
	}
	if math.IsInf(lo, 0) {
		return 0, 1
	}
	return lo, hi
}

// categoryChart draws series over categories xs: as lines with points, or
// as grouped bars.
func categoryChart(title, xlabel, ylabel string, xs []string, ss []series, bars, logY bool, format func(float64) string) string {
	const w, h, left, right, top, bottom = 720, 420, 80, 20, 40, 70
	d := newSVG(w, h, title)
	lo, hi := estRange(ss)
	y := newAxis(lo, hi, logY, h-bottom, top, format)
	for _, t := range y.ticks {
		py := y.px(t)
		d.line(left, py, w-right, py, "#ddd", 1, "")
		d.text(left-6, py+4, "end", "", format(t))
	}
	d.line(left, h-bottom, w-right, h-bottom, "#333", 1, "")
	d.line(left, top, left, h-bottom, "#333", 1, "")
	fmt.Fprintf(&d.b, `<text transform="translate(16,%d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", (top+h-bottom)/2, xmlEscape(ylabel))
	d.text(float64(left+w-right)/2, h-12, "middle", "", xlabel)
	slot := float64(w-left-right) / float64(len(xs))
	for i, x := range xs {
		cx := float64(left) + slot*(float64(i)+0.5)
		d.text(cx, h-bottom+16, "middle", "", x)
	}
	base := h - bottom
	for si, s := range ss {
		color := palette[si%len(palette)]
		var path []string
		for i, p := range s.pts {
			if !p.ok() {
				continue
			}
			cx := float64(left) + slot*(float64(i)+0.5)
			if bars {
				bw := slot * 0.8 / float64(len(ss))
				bx := float64(left) + slot*float64(i) + slot*0.1 + bw*float64(si)
				cx = bx + bw/2
				py := y.px(p.mean)
				fmt.Fprintf(&d.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" opacity="0.85"/>`+"\n", bx, py, bw-2, float64(base)-py, color)
			} else {
				path = append(path, fmt.Sprintf("%.1f,%.1f", cx, y.px(p.mean)))
				fmt.Fprintf(&d.b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", cx, y.px(p.mean), color)
			}
			errBarV(d, cx, y.px(p.lo), y.px(p.hi), "#222")
		}
		if len(path) > 1 {
			fmt.Fprintf(&d.b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(path, " "), color)
		}
	}
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.name
	}
	d.legend(w-right-170, top+12, names)
	return d.String()
}

func errBarV(d *svgDoc, x, y1, y2 float64, color string) {
	if math.Abs(y1-y2) < 0.5 {
		return
	}
	d.line(x, y1, x, y2, color, 1.2, "")
	d.line(x-4, y1, x+4, y1, color, 1.2, "")
	d.line(x-4, y2, x+4, y2, color, 1.2, "")
}

// row is one horizontal row: a label, a value with its interval, and
// optionally a target to mark.
type row struct {
	label  string
	v      est
	target float64 // 0: none
	color  int
}

// rowChart draws rows as horizontal bars (bars) or dots, with reference
// lines at refs.
func rowChart(title, xlabel string, rows []row, bars, logX bool, refs []float64, format func(float64) string) string {
	const w, left, right, top, rowH = 760, 300, 30, 40, 24
	h := top + rowH*len(rows) + 50
	d := newSVG(w, h, title)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range rows {
		if r.v.ok() {
			lo, hi = math.Min(lo, math.Min(r.v.lo, r.v.mean)), math.Max(hi, math.Max(r.v.hi, r.v.mean))
		}
		if r.target > 0 {
			lo, hi = math.Min(lo, r.target), math.Max(hi, r.target)
		}
	}
	for _, ref := range refs {
		lo, hi = math.Min(lo, ref), math.Max(hi, ref)
	}
	if !bars && !logX {
		pad := (hi - lo) * 0.08
		lo, hi = lo-pad, hi+pad
	}
	x := newAxis(lo, hi, logX, left, w-right, format)
	if !bars && !logX { // a dot chart need not start at zero
		x.lo, x.hi = lo, hi
		step := niceStep((hi - lo) / 6)
		x.ticks = nil
		for v := math.Ceil(lo/step) * step; v <= hi; v += step {
			x.ticks = append(x.ticks, v)
		}
	}
	bottom := float64(top + rowH*len(rows))
	for _, t := range x.ticks {
		px := x.px(t)
		d.line(px, top, px, bottom, "#ddd", 1, "")
		d.text(px, bottom+16, "middle", "", format(t))
	}
	for _, ref := range refs {
		d.line(x.px(ref), top, x.px(ref), bottom, "#555", 1.2, `stroke-dasharray="4,3"`)
	}
	d.text(float64(left+w-right)/2, bottom+38, "middle", "", xlabel)
	for i, r := range rows {
		cy := float64(top + rowH*i + rowH/2)
		d.text(left-8, cy+4, "end", "", r.label)
		if !r.v.ok() {
			d.text(left+4, cy+4, "start", `fill="#999"`, "not measured")
			continue
		}
		color := palette[r.color%len(palette)]
		if bars {
			x0 := x.p0 // the axis starts at zero, or at a power of ten on a log axis
			fmt.Fprintf(&d.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="%s" opacity="0.85"/>`+"\n", x0, cy-8, x.px(r.v.mean)-x0, 16, color)
		} else {
			fmt.Fprintf(&d.b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x.px(r.v.mean), cy, color)
		}
		if r.v.hi-r.v.lo > 0 {
			d.line(x.px(r.v.lo), cy, x.px(r.v.hi), cy, "#222", 1.2, "")
			d.line(x.px(r.v.lo), cy-5, x.px(r.v.lo), cy+5, "#222", 1.2, "")
			d.line(x.px(r.v.hi), cy-5, x.px(r.v.hi), cy+5, "#222", 1.2, "")
		}
		if r.target > 0 {
			tx := x.px(r.target)
			d.line(tx, cy-9, tx, cy+9, "#d62728", 2.5, "")
		}
	}
	return d.String()
}
