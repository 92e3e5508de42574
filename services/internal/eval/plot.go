package eval

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"strings"
)

var (
	white     = color.RGBA{255, 255, 255, 255}
	black     = color.RGBA{30, 30, 30, 255}
	grey      = color.RGBA{215, 215, 215, 255}
	detColor  = color.RGBA{31, 119, 180, 255}
	baseColor = color.RGBA{255, 127, 14, 255}
)

// WritePlot draws a grouped bar chart of F1 per tampered scenario, the
// detector beside the fixed-threshold baseline, as a PNG: each bar is the
// mean over the seeds, its whisker the range.
func WritePlot(w io.Writer, rep *Report) error {
	var groups []scenarioRuns
	for _, g := range byScenario(rep) {
		if !g.Legit {
			groups = append(groups, g)
		}
	}
	const W, H, left, right, top, bottom = 960, 480, 70, 20, 60, 70
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	fill(img, img.Bounds(), white)
	plotH := H - top - bottom
	y := func(v float64) int { return top + plotH - int(math.Round(v*float64(plotH))) }
	for i := 0; i <= 4; i++ {
		v := float64(i) / 4
		fill(img, image.Rect(left, y(v), W-right, y(v)+1), grey)
		text(img, left-40, y(v)-5, 2, strings.TrimRight(strings.TrimRight(ftoa(v), "0"), "."), black)
	}
	fill(img, image.Rect(left, top, left+1, top+plotH+1), black)
	fill(img, image.Rect(left, top+plotH, W-right, top+plotH+1), black)
	title := "F1 PER TAMPERED SCENARIO (DEVICE LEVEL)"
	if rep.Config.Seeds > 1 {
		title = fmt.Sprintf("F1 PER TAMPERED SCENARIO: MEAN OF %d SEEDS", rep.Config.Seeds)
	}
	text(img, left, 14, 3, title, black)
	fill(img, image.Rect(W-330, 16, W-316, 30), detColor)
	text(img, W-308, 18, 2, "DETECTOR", black)
	fill(img, image.Rect(W-180, 16, W-166, 30), baseColor)
	text(img, W-158, 18, 2, "THRESHOLDS", black)
	if len(groups) > 0 {
		group := (W - left - right) / len(groups)
		bar := group / 3
		for i, g := range groups {
			x := left + i*group + group/6
			for j, score := range []func(Result) float64{
				func(r Result) float64 { return r.Detector.F1() },
				func(r Result) float64 { return r.Baseline.F1() },
			} {
				c := detColor
				if j == 1 {
					c = baseColor
				}
				v, lo, hi := stats(g.Runs, score)
				x0 := x + j*bar
				fill(img, image.Rect(x0, y(v), x0+bar-4, top+plotH), c)
				if v == 0 {
					fill(img, image.Rect(x0, top+plotH-2, x0+bar-4, top+plotH), c)
				}
				label := y(v) - 14
				if hi > lo {
					mid := x0 + (bar-4)/2
					fill(img, image.Rect(mid, y(hi), mid+2, y(lo)+1), black)
					fill(img, image.Rect(mid-5, y(hi), mid+7, y(hi)+2), black)
					fill(img, image.Rect(mid-5, y(lo)-1, mid+7, y(lo)+1), black)
					label = min(label, y(hi)-14)
				}
				text(img, x0+2, label, 2, ftoa(v), black)
			}
			name := strings.ToUpper(g.Name)
			text(img, x+bar-len(name)*4, top+plotH+12, 2, name, black)
		}
	}
	return png.Encode(w, img)
}

func ftoa(v float64) string {
	s := []byte("0.00")
	n := int(math.Round(v * 100))
	if n >= 100 {
		return "1.00"
	}
	s[2], s[3] = byte('0'+n/10), byte('0'+n%10)
	return string(s)
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// text draws s in a 3×5 pixel font scaled by scale; unknown runes are
// blank.
func text(img *image.RGBA, x, y, scale int, s string, c color.RGBA) {
	for _, r := range strings.ToUpper(s) {
		g := glyphs[r]
		for row := range 5 {
			for col := range 3 {
				if g[row]&(4>>col) != 0 {
					fill(img, image.Rect(x+col*scale, y+row*scale, x+(col+1)*scale, y+(row+1)*scale), c)
				}
			}
		}
		x += 4 * scale
	}
}

// glyphs: each row is 3 bits, the high bit on the left.
var glyphs = map[rune][5]uint8{
	'0': {7, 5, 5, 5, 7}, '1': {2, 6, 2, 2, 7}, '2': {7, 1, 7, 4, 7}, '3': {7, 1, 7, 1, 7}, '4': {5, 5, 7, 1, 1},
	'5': {7, 4, 7, 1, 7}, '6': {7, 4, 7, 5, 7}, '7': {7, 1, 1, 1, 1}, '8': {7, 5, 7, 5, 7}, '9': {7, 5, 7, 1, 7},
	'A': {2, 5, 7, 5, 5}, 'B': {6, 5, 6, 5, 6}, 'C': {7, 4, 4, 4, 7}, 'D': {6, 5, 5, 5, 6}, 'E': {7, 4, 6, 4, 7},
	'F': {7, 4, 6, 4, 4}, 'G': {7, 4, 5, 5, 7}, 'H': {5, 5, 7, 5, 5}, 'I': {7, 2, 2, 2, 7}, 'J': {1, 1, 1, 5, 7},
	'K': {5, 5, 6, 5, 5}, 'L': {4, 4, 4, 4, 7}, 'M': {5, 7, 7, 5, 5}, 'N': {6, 5, 5, 5, 5}, 'O': {7, 5, 5, 5, 7},
	'P': {7, 5, 7, 4, 4}, 'Q': {7, 5, 5, 7, 1}, 'R': {6, 5, 6, 5, 5}, 'S': {7, 4, 7, 1, 7}, 'T': {7, 2, 2, 2, 2},
	'U': {5, 5, 5, 5, 7}, 'V': {5, 5, 5, 5, 2}, 'W': {5, 5, 7, 7, 5}, 'X': {5, 5, 2, 5, 5}, 'Y': {5, 5, 2, 2, 2},
	'Z': {7, 1, 2, 4, 7}, '.': {0, 0, 0, 0, 2}, '-': {0, 0, 7, 0, 0}, '(': {1, 2, 2, 2, 1}, ')': {4, 2, 2, 2, 4},
	':': {0, 2, 0, 2, 0}, '/': {1, 1, 2, 4, 4},
}
