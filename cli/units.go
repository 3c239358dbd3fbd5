package cli

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// sizeUnits are the suffixes ParseSize accepts, all powers of 1024 as systemd reads
// MemoryMax= and friends: "2G" is 2 GiB.
var sizeUnits = []struct {
	suffixes []string
	factor   float64
}{
	{[]string{"pib", "pi", "p"}, 1 << 50},
	{[]string{"tib", "ti", "t"}, 1 << 40},
	{[]string{"gib", "gi", "g"}, 1 << 30},
	{[]string{"mib", "mi", "m"}, 1 << 20},
	{[]string{"kib", "ki", "k"}, 1 << 10},
	{[]string{"b", ""}, 1},
}

// ParseSize parses a size in bytes: a plain number of bytes ("1048576"), or a number with a
// binary unit: K, M, G, T, P, optionally followed by "iB" or "B" ("512M", "2G", "10GiB",
// "1.5G"). Units are case-insensitive and always powers of 1024. "GB" and friends are refused
// as ambiguous.
func ParseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, errors.New("empty size")
	}
	lower := strings.ToLower(in)
	// Split the number from the unit.
	i := len(lower)
	for i > 0 && (lower[i-1] < '0' || lower[i-1] > '9') && lower[i-1] != '.' {
		i--
	}
	num, unit := strings.TrimSpace(lower[:i]), strings.TrimSpace(lower[i:])
	if num == "" {
		return 0, fmt.Errorf("%q has no number", s)
	}
	if len(unit) == 2 && unit[1] == 'b' && strings.ContainsRune("kmgtp", rune(unit[0])) {
		return 0, fmt.Errorf("%q is ambiguous: write %siB (powers of 1024)", s, strings.ToUpper(unit[:1]))
	}
	factor := 0.0
	for _, u := range sizeUnits {
		for _, suf := range u.suffixes {
			if unit == suf {
				factor = u.factor
			}
		}
	}
	if factor == 0 {
		return 0, fmt.Errorf("%q has an unknown unit %q (use K, M, G, T or P, or KiB, MiB, GiB...)", s, in[i:])
	}
	if strings.HasPrefix(num, "-") {
		return 0, fmt.Errorf("%q is negative", s)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseUint(num, 10, 63)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number of bytes", s)
		}
		if float64(n)*factor > math.MaxInt64 {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return int64(n) * int64(factor), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	v := f * factor
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(math.Round(v)), nil
}

// FormatSize formats bytes in binary units for people: "1 GiB", "1.5 GiB", "512 MiB", "100 B".
func FormatSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if n < 1024 && n > -1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	u := 0
	for math.Abs(v) >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	if v == math.Trunc(v) {
		return fmt.Sprintf("%d %s", int64(v), units[u])
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + units[u]
}

// ParseCPUs parses a number of CPUs, fractions allowed ("0.5").
func ParseCPUs(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number of CPUs", s)
	}
	if f <= 0 {
		return 0, fmt.Errorf("%q: the number of CPUs must be positive", s)
	}
	return f, nil
}

// formatCPUs prints a number of CPUs without needless digits.
func formatCPUs(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// formatAge prints how long ago t was, in the largest unit that fits, rounded down:
// "45s", "12m", "5h", "3d".
func formatAge(now time.Time, rfc3339 string) string {
	t, err := time.Parse(time.RFC3339Nano, rfc3339)
	if err != nil {
		return "?"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

// formatTime prints an RFC 3339 time for people: to the second, in the local time zone, and
// how long ago (or, in the future, how soon): "2026-12-07 21:22:05 UTC (3m ago)". A time that does not parse is printed as
// it came.
func formatTime(now time.Time, rfc3339 string) string {
	t, err := time.Parse(time.RFC3339Nano, rfc3339)
	if err != nil {
		return rfc3339
	}
	at := t.In(now.Location()).Format(humanTime)
	if d := t.Sub(now); d > time.Second {
		return fmt.Sprintf("%s (in %s)", at, formatAge(t, now.Format(time.RFC3339Nano)))
	}
	return fmt.Sprintf("%s (%s ago)", at, formatAge(now, rfc3339))
}

// humanTime is the layout of formatTime.
const humanTime = "2006-01-02 15:04:05 MST"

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
