package console

import (
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
)

// The chart puts each hour's count in its bar, per hour or summed per day,
// and leaves out what falls outside the 7 days shown.
func TestUsageChart(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 30, 0, 0, time.UTC)
	usage := []keystore.HourlyUsage{
		{Hour: now.Add(-8 * 24 * time.Hour).Truncate(time.Hour), Count: 100}, // before the window
		{Hour: time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC), Count: 4},
		{Hour: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC), Count: 1},
		{Hour: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC), Count: 8},
	}
	h := usageChart(usage, "hour", now)
	if len(h.Bars) != 168 || h.Total != 13 || h.Max != 8 {
		t.Fatalf("per hour: %d bars, total %d, max %d", len(h.Bars), h.Total, h.Max)
	}
	if last := h.Bars[167]; last.Count != 8 || last.H != chartPlotH || last.Y != 0 {
		t.Errorf("the current hour's bar: %+v", last)
	}
	if b := h.Bars[167-27]; b.Count != 4 || b.H != chartPlotH/2 {
		t.Errorf("yesterday 09:00: %+v", b)
	}
	if b := h.Bars[167-26]; b.Count != 1 || b.H == 0 {
		t.Errorf("a single check has no visible bar: %+v", b)
	}
	d := usageChart(usage, "day", now)
	if len(d.Bars) != 7 || d.Total != 13 || d.Bars[5].Count != 5 || d.Bars[6].Count != 8 {
		t.Fatalf("per day: %+v", d.Bars)
	}
	if e := usageChart(nil, "hour", now); e.Total != 0 || e.Max != 0 || e.Bars[0].H != 0 {
		t.Errorf("no usage: %+v", e)
	}
}
