package console

import (
	"strconv"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
)

// chart is a key's usage as bars, drawn by the key page's template as
// SVG: no script, so it renders under the CSP and without JavaScript, and
// a table beside it gives the same numbers to screen readers.
type chart struct {
	Width, Height int
	Bars          []bar
	Max, Total    int64
	Unit          string // "hour" or "day"
	From, To      string
	Ticks         []tick
	// Times and Counts are the bars as comma-separated numbers (each
	// bar's start in Unix seconds, its count), for the script that draws
	// the interactive chart over the SVG.
	Times, Counts string
}

// bar is one hour or day.
type bar struct {
	X, Y, W, H int
	Label      string
	Count      int64
}

// tick is a label under the x axis.
type tick struct {
	X     int
	Label string
}

const (
	chartWidth  = 720
	chartHeight = 160
	chartPlotH  = 140 // the bars' area; the rest is for tick labels
)

// usageChart buckets the API's hourly counts (the last 7 days, oldest
// first, sparse) per hour or per day, ending now.
func usageChart(usage []keystore.HourlyUsage, by string, now time.Time) chart {
	step, n, layout := time.Hour, 7*24, "Mon 15:04"
	if by == "day" {
		step, n, layout = 24*time.Hour, 7, "Mon 2 Jan"
	}
	end := now.UTC().Truncate(step).Add(step)
	start := end.Add(-time.Duration(n) * step)
	counts := make([]int64, n)
	c := chart{Width: chartWidth, Height: chartHeight, Unit: by}
	for _, u := range usage {
		i := int(u.Hour.UTC().Sub(start) / step)
		if u.Hour.Before(start) || i < 0 || i >= n {
			continue
		}
		counts[i] += u.Count
		c.Total += u.Count
	}
	for _, v := range counts {
		c.Max = max(c.Max, v)
	}
	w := chartWidth / n
	for i, v := range counts {
		h := 0
		if c.Max > 0 {
			h = int(v * chartPlotH / c.Max)
			if v > 0 && h == 0 {
				h = 1 // a use is never invisible
			}
		}
		at := start.Add(time.Duration(i) * step)
		c.Bars = append(c.Bars, bar{X: i * w, Y: chartPlotH - h, W: max(w-1, 1), H: h, Count: v,
			Label: at.Format(layout) + ": " + strconv.FormatInt(v, 10)})
		if by == "day" || at.Hour() == 0 {
			c.Ticks = append(c.Ticks, tick{X: i*w + 2, Label: at.Format("Mon 2")})
		}
	}
	times, cs := make([]string, n), make([]string, n)
	for i, v := range counts {
		times[i] = strconv.FormatInt(start.Add(time.Duration(i)*step).Unix(), 10)
		cs[i] = strconv.FormatInt(v, 10)
	}
	c.Times, c.Counts = strings.Join(times, ","), strings.Join(cs, ",")
	c.From, c.To = start.Format("2006-01-02 15:04 UTC"), end.Format("2006-01-02 15:04 UTC")
	return c
}
