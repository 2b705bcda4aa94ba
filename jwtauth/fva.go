package jwtauth

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Step-up verification ("reverification") follows Clerk's own SDK, read in
// github.com/clerk/javascript at commit
// e21ae9a4cf189ed20cb04bee94497533cd9d4dbe:
//
//   - packages/shared/src/types/jwtv2.ts: fva is a tuple of two numbers,
//     the minutes since the first and the second factor were last verified
//     when the token was issued;
//   - packages/shared/src/authorization.ts (checkReverificationAuthorization,
//     the check behind has({reverification})): -1 means the factor group is
//     not enabled for the user; an fva that is not a two-element array of
//     numbers that are -1 or ≥ 0 fails; both -1 fails; a factor is fresh
//     when afterMinutes > its age; first_factor needs the first factor
//     fresh; second_factor needs the second, or the first when the user has
//     no second factor (fva[1] = -1), or the second when the user has no
//     first (fva[0] = -1); multi_factor needs both, or the first alone when
//     the user has no second factor, and fails when the user has no first;
//   - packages/shared/src/types/sessionVerification.ts: afterMinutes is at
//     least 1 and below 99,999.
//
// Clerk's SDK compares the ages as issued: its tokens live a minute. odin
// authz caches a verified token for longer (until its exp plus the
// leeway), so it ages fva from the token's iat: a factor verified fva[i]
// minutes before iat is fresh at now while fva[i] minutes + (now − iat) <
// max age. At now = iat that is exactly Clerk's test.

// FactorVerification is what a session token says about its factors:
// Clerk's fva claim and the iat it counts from. A token without a usable
// fva (absent, malformed, or without iat) has none (Session.Factors is
// nil), and fails every reverification requirement.
type FactorVerification struct {
	// IssuedAt is the token's iat, in Unix seconds.
	IssuedAt int64 `json:"iat"`
	// Ages is fva as issued: the minutes since the first and the second
	// factor were verified, -1 for a factor group the user has not enabled.
	Ages [2]int32 `json:"fva"`
}

// maxFactorAge bounds an fva element: far above any real age (190 years
// of minutes), and small enough for the arithmetic to stay exact.
const maxFactorAge = 100_000_000

// factorVerification reads the fva claim of a token issued at iat. It
// returns nil when the claim is absent or null, is not an array of exactly
// two integers that are -1 or ≥ 0, or when iat is unknown: such a token is
// not refused for it, it only fails reverification (a 403 the dashboard
// can recover from), the same outcome Clerk's has() gives.
func factorVerification(raw []byte, iat time.Time) *FactorVerification {
	if raw == nil || iat.IsZero() || len(raw) < 2 || raw[0] != '[' {
		return nil
	}
	var f FactorVerification
	n := 0
	ok := forEachElement(raw, func(value []byte) bool {
		if n == len(f.Ages) {
			n++
			return false
		}
		age, err := parseNumber(value)
		if err != nil || age != math.Trunc(age) || age < -1 || age > maxFactorAge {
			return false
		}
		f.Ages[n] = int32(age)
		n++
		return true
	})
	if !ok || n != len(f.Ages) {
		return nil
	}
	f.IssuedAt = iat.Unix()
	return &f
}

// Level is a reverification level, as Clerk names them.
type Level uint8

// The levels of Clerk's SessionVerificationLevel.
const (
	FirstFactor Level = iota + 1
	SecondFactor
	MultiFactor
)

var levelNames = [...]string{FirstFactor: "first_factor", SecondFactor: "second_factor", MultiFactor: "multi_factor"}

// String is the level's name in Clerk's API and in policy files.
func (l Level) String() string {
	if int(l) < len(levelNames) && levelNames[l] != "" {
		return levelNames[l]
	}
	return "unknown"
}

// ParseLevel reads a level name: first_factor, second_factor or
// multi_factor.
func ParseLevel(s string) (Level, error) {
	for l, name := range levelNames {
		if name != "" && s == name {
			return Level(l), nil
		}
	}
	return 0, fmt.Errorf("unknown reverification level %q (first_factor, second_factor or multi_factor)", s)
}

// MaxReverifyAge is the longest max age Clerk accepts (afterMinutes below
// 99,999).
const MaxReverifyAge = 99_998 * time.Minute

// Reverification is a requirement that a session verified a factor
// recently: Clerk's ReverificationConfig {level, afterMinutes}.
type Reverification struct {
	Level  Level
	MaxAge time.Duration // a whole number of minutes, 1 to 99,998
}

// reverificationPresets are Clerk's named configurations.
var reverificationPresets = map[string]Reverification{
	"strict_mfa": {MultiFactor, 10 * time.Minute},
	"strict":     {SecondFactor, 10 * time.Minute},
	"moderate":   {SecondFactor, time.Hour},
	"lax":        {SecondFactor, 24 * time.Hour},
}

// ReverificationPreset returns one of Clerk's named configurations:
// strict_mfa, strict, moderate or lax.
func ReverificationPreset(name string) (Reverification, bool) {
	r, ok := reverificationPresets[name]
	return r, ok
}

// NewReverification checks a level and a max age: the age must be a whole
// number of minutes from 1 to 99,998, as Clerk's afterMinutes.
func NewReverification(level string, maxAge time.Duration) (Reverification, error) {
	l, err := ParseLevel(level)
	if err != nil {
		return Reverification{}, err
	}
	if maxAge < time.Minute || maxAge%time.Minute != 0 || maxAge > MaxReverifyAge {
		return Reverification{}, fmt.Errorf("reverification max age %s: must be a whole number of minutes from 1m to %dm", maxAge, MaxReverifyAge/time.Minute)
	}
	return Reverification{Level: l, MaxAge: maxAge}, nil
}

// ParseReverification reads "level:max_age" (second_factor:10m) or one of
// Clerk's presets: strict_mfa (multi_factor:10m), strict
// (second_factor:10m), moderate (second_factor:1h), lax
// (second_factor:24h).
func ParseReverification(s string) (Reverification, error) {
	if r, ok := ReverificationPreset(s); ok {
		return r, nil
	}
	level, age, ok := strings.Cut(s, ":")
	if !ok {
		return Reverification{}, fmt.Errorf("reverification %q: want level:max_age (second_factor:10m) or strict_mfa, strict, moderate, lax", s)
	}
	d, err := time.ParseDuration(age)
	if err != nil {
		return Reverification{}, fmt.Errorf("reverification %q: max age: %w", s, err)
	}
	return NewReverification(level, d)
}

// AfterMinutes is the max age in minutes, Clerk's afterMinutes.
func (r Reverification) AfterMinutes() int { return int(r.MaxAge / time.Minute) }

// Requirement says what the requirement asks, for messages:
// "second_factor within 10 minutes".
func (r Reverification) Requirement() string {
	return r.Level.String() + " within " + strconv.Itoa(r.AfterMinutes()) + " minutes"
}

// String is the requirement as ParseReverification reads it.
func (r Reverification) String() string {
	return r.Level.String() + ":" + strconv.Itoa(r.AfterMinutes()) + "m"
}

// Satisfied reports whether a session with factors f meets the requirement
// at now, by Clerk's rules (see the top of this file), the ages counted
// from the token's iat. A nil f (no usable fva) never does. It does not
// allocate.
func (r Reverification) Satisfied(f *FactorVerification, now time.Time) bool {
	if f == nil {
		return false
	}
	elapsed := now.Unix() - f.IssuedAt
	if elapsed < 0 { // a clock behind the issuer's: age as at issue
		elapsed = 0
	}
	first, second := f.Ages[0] != -1, f.Ages[1] != -1
	fresh := func(age int32) bool { return int64(age)*60+elapsed < int64(r.MaxAge/time.Second) }
	firstFresh := first && fresh(f.Ages[0])
	secondFresh := second && fresh(f.Ages[1])
	switch {
	case !first && !second:
		return false
	case r.Level == FirstFactor:
		return firstFresh
	case r.Level == SecondFactor:
		if !second {
			return firstFresh
		}
		return secondFresh
	case r.Level == MultiFactor:
		if !second {
			return firstFresh
		}
		return firstFresh && secondFresh
	}
	return false
}
