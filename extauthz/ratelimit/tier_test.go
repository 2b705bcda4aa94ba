package ratelimit

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseTiers(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]Tier
	}{
		{"", map[string]Tier{}},
		{"free=10/s:20", map[string]Tier{"free": {Rate: 10, Burst: 20}}},
		{" free = 10/s:20 , pro=6000/m:200,batch=36/h:1 ", map[string]Tier{
			"free":  {Rate: 10, Burst: 20},
			"pro":   {Rate: 100, Burst: 200},
			"batch": {Rate: 0.01, Burst: 1},
		}},
		{"slow=0.5/s:1", map[string]Tier{"slow": {Rate: 0.5, Burst: 1}}},
	}
	for _, tt := range tests {
		got, err := ParseTiers(tt.in)
		if err != nil {
			t.Errorf("ParseTiers(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseTiers(%q) (-want, +got):\n%s", tt.in, diff)
		}
	}
}

func TestParseTiersErrors(t *testing.T) {
	tests := []struct{ in, wantErr string }{
		{"free", "want name=RATE/UNIT:BURST"},
		{"=10/s:20", "want name=RATE/UNIT:BURST"},
		{"free=10/s", "missing :BURST"},
		{"free=10:20", "missing /UNIT"},
		{"free=10/d:20", `unit "d"`},
		{"free=ten/s:20", `rate "ten": not a number`},
		{"free=10/s:2.5", `burst "2.5": not a whole number`},
		{"free=0/s:20", "want more than 0"},
		{"free=-1/s:20", "want more than 0"},
		{"free=1e9/s:20", "at most 100000"},
		{"free=10/s:0", "burst 0: want 1"},
		{"free=10/s:20,free=1/s:2", `"free": given twice`},
		{"fr ee=10/s:20", "use letters, digits"},
	}
	for _, tt := range tests {
		_, err := ParseTiers(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseTiers(%q) = %v, want an error containing %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestTierStringRoundTrip(t *testing.T) {
	for name, tier := range DefaultTiers() {
		got, err := ParseTiers(name + "=" + tier.String())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(map[string]Tier{name: tier}, got); diff != "" {
			t.Errorf("round trip (-want, +got):\n%s", diff)
		}
	}
}

func TestNewOptions(t *testing.T) {
	if _, err := New(nil, Options{DefaultTier: "gold"}, nil, nil); err == nil || !strings.Contains(err.Error(), `default tier "gold"`) {
		t.Errorf("unknown default tier: err = %v", err)
	}
	if _, err := New(nil, Options{LeaseFraction: 1.5}, nil, nil); err == nil {
		t.Error("lease fraction 1.5 accepted")
	}
	if _, err := New(nil, Options{Tiers: map[string]Tier{"x": {Rate: 1}}}, nil, nil); err == nil {
		t.Error("burst 0 accepted")
	}
	l, err := New(nil, Options{Tiers: map[string]Tier{"pro": {Rate: 50, Burst: 500}, "gold": {Rate: 5, Burst: 5}, "bursty": {Rate: 1, Burst: 1000}}, DefaultTier: "gold"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tier, wantName string
		want           Tier
		wantBatch      int
	}{
		{"pro", "pro", Tier{Rate: 50, Burst: 500}, 5},       // overridden; batch: a tenth of 50/s × 1s
		{"enterprise", "enterprise", Tier{1000, 2000}, 100}, // default kept
		{"free", "free", Tier{10, 20}, 1},                   // 5% of 20
		{"bursty", "bursty", Tier{1, 1000}, 1},              // not 50: a quiet replica would waste 50× the rate
		{"platinum", "gold", Tier{5, 5}, 1},                 // unknown: the default tier
		{"", "gold", Tier{5, 5}, 1},                         // none: the default tier
	}
	for _, tt := range tests {
		name, tier, batch := l.Limits(tt.tier)
		if name != tt.wantName || tier != tt.want || batch != tt.wantBatch {
			t.Errorf("Limits(%q) = %q %v batch %d, want %q %v batch %d", tt.tier, name, tier, batch, tt.wantName, tt.want, tt.wantBatch)
		}
	}
}

// ParseLimit reads one limit as a tier list writes it, validated.
func TestParseLimit(t *testing.T) {
	if got, err := ParseLimit(" 600/m:50 "); err != nil || got != (Tier{Rate: 10, Burst: 50}) {
		t.Errorf("ParseLimit(600/m:50) = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "10", "10/s", "0/s:1", "10/s:0", "10/d:1", "1e9/s:1"} {
		if _, err := ParseLimit(bad); err == nil {
			t.Errorf("ParseLimit(%q) accepted", bad)
		}
	}
}
