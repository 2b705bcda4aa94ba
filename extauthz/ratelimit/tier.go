package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Tier is the limit of one subscription tier, applied per limit key.
type Tier struct {
	// Rate is the sustained rate in requests per second (fractions allowed:
	// 0.5 is one request every two seconds). ParseTiers also accepts per
	// minute and per hour and converts them.
	Rate float64
	// Burst is how many requests a caller with an unused budget may send at
	// once; it is also the Limit reported to the caller (ratelimit-limit).
	Burst int
}

// Bounds of a tier. The shared state counts time in whole microseconds, so a
// token interval is rounded to 1µs: the rate's relative error is at most
// rate/2,000,000 (0.05% at 1,000/s, 5% at the 100,000/s maximum).
const (
	maxRate  = 100_000
	maxBurst = 1_000_000_000
)

// DefaultTiers are the tiers used when Options.Tiers does not override
// them: free 10/s with bursts of 20, pro 100/s with bursts of 200,
// enterprise 1,000/s with bursts of 2,000 — each tier allows two seconds of
// its rate at once.
func DefaultTiers() map[string]Tier {
	return map[string]Tier{
		"free":       {Rate: 10, Burst: 20},
		"pro":        {Rate: 100, Burst: 200},
		"enterprise": {Rate: 1000, Burst: 2000},
	}
}

// Validate reports whether the tier is usable.
func (t Tier) Validate() error {
	if math.IsNaN(t.Rate) || t.Rate <= 0 || t.Rate > maxRate {
		return fmt.Errorf("rate %v: want more than 0 and at most %d requests per second", t.Rate, maxRate)
	}
	if t.Burst < 1 || t.Burst > maxBurst {
		return fmt.Errorf("burst %d: want 1 to %d", t.Burst, maxBurst)
	}
	return nil
}

// String formats the tier as ParseTiers reads it, in requests per second.
func (t Tier) String() string {
	return strconv.FormatFloat(t.Rate, 'g', -1, 64) + "/s:" + strconv.Itoa(t.Burst)
}

// ParseTiers reads a tier list such as "free=10/s:20,pro=6000/m:200": comma
// separated name=RATE/UNIT:BURST entries, where UNIT is s (per second), m
// (per minute) or h (per hour), RATE may have a fraction and BURST is a
// whole number. Spaces around entries are ignored; a name given twice is an
// error. The result holds only the listed tiers; New adds them over
// DefaultTiers.
func ParseTiers(s string) (map[string]Tier, error) {
	tiers := map[string]Tier{}
	if strings.TrimSpace(s) == "" {
		return tiers, nil
	}
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		name, spec, ok := strings.Cut(entry, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("rate limit tier %q: want name=RATE/UNIT:BURST, for example free=10/s:20", entry)
		}
		if err := validName(name); err != nil {
			return nil, fmt.Errorf("rate limit tier %q: %w", entry, err)
		}
		if _, dup := tiers[name]; dup {
			return nil, fmt.Errorf("rate limit tier %q: given twice", name)
		}
		t, err := parseTier(strings.TrimSpace(spec))
		if err != nil {
			return nil, fmt.Errorf("rate limit tier %q: %w", entry, err)
		}
		tiers[name] = t
	}
	return tiers, nil
}

// ParseLimit reads one limit as ParseTiers writes a tier's: RATE/UNIT:BURST,
// for example 10/s:20 or 600/m:50 (an API key's own limit, on the command
// line). It is validated.
func ParseLimit(spec string) (Tier, error) {
	return parseTier(strings.TrimSpace(spec))
}

func parseTier(spec string) (Tier, error) {
	rate, burst, ok := strings.Cut(spec, ":")
	if !ok {
		return Tier{}, errors.New("missing :BURST, for example 10/s:20")
	}
	num, unit, ok := strings.Cut(rate, "/")
	if !ok {
		return Tier{}, errors.New("missing /UNIT after the rate: /s, /m or /h")
	}
	var per time.Duration
	switch strings.TrimSpace(unit) {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	case "h":
		per = time.Hour
	default:
		return Tier{}, fmt.Errorf("unit %q: want s, m or h", unit)
	}
	r, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsInf(r, 0) {
		return Tier{}, fmt.Errorf("rate %q: not a number", num)
	}
	b, err := strconv.Atoi(strings.TrimSpace(burst))
	if err != nil {
		return Tier{}, fmt.Errorf("burst %q: not a whole number", burst)
	}
	t := Tier{Rate: r / per.Seconds(), Burst: b}
	return t, t.Validate()
}

func validName(name string) error {
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("name %q: use letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// limits is a tier prepared for the hot path.
type limits struct {
	name  string
	burst int
	// intervalUS is the time one token takes to come back, in the whole
	// microseconds the shared state counts in.
	intervalUS int64
	// intervalNs and capacityNs (burst × interval) drive the in-process
	// fallback.
	intervalNs, capacityNs int64
	// batch is the size of a lease; minBatch the smallest partial lease
	// worth a round trip (see Limiter).
	batch, minBatch int
}

// newLimits sizes the lease batch: fraction of the burst, but at most a
// tenth of what the tier allows in a lease's lifetime, so a replica that
// lets its leases expire unspent wastes at most a tenth of the rate (which
// matters for tiers whose burst is many seconds of their rate).
func newLimits(name string, t Tier, fraction float64, leaseTTL time.Duration) *limits {
	us := max(1, int64(math.Round(1e6/t.Rate)))
	batch := int(math.Round(fraction * float64(t.Burst)))
	batch = min(batch, int(t.Rate*leaseTTL.Seconds()/10), t.Burst)
	batch = max(batch, 1)
	return &limits{
		name:       name,
		burst:      t.Burst,
		intervalUS: us,
		intervalNs: us * 1000,
		capacityNs: int64(t.Burst) * us * 1000,
		batch:      batch,
		minBatch:   (batch + 1) / 2,
	}
}
