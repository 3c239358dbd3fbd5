package cli

import (
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		err  string
	}{
		{"0", 0, ""},
		{"1048576", 1 << 20, ""},
		{"100B", 100, ""},
		{"512M", 512 << 20, ""},
		{"512m", 512 << 20, ""},
		{"2G", 2 << 30, ""},
		{"10GiB", 10 << 30, ""},
		{"10 GiB", 10 << 30, ""},
		{"1.5G", 3 << 29, ""},
		{"4Ki", 4096, ""},
		{"2T", 2 << 40, ""},
		{"1P", 1 << 50, ""},
		{"", 0, "empty size"},
		{"G", 0, "has no number"},
		{"2GB", 0, "ambiguous: write GiB"},
		{"2X", 0, `unknown unit "X"`},
		{"-1G", 0, "negative"},
		{"1.2.3G", 0, "not a size"},
		{"9999999P", 0, "too large"},
		{"99999999999999999999", 0, "not a number of bytes"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseSize(c.in)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("ParseSize(%q) = %d, %v; want error with %q", c.in, got, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	cases := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{100, "100 B"},
		{1024, "1 KiB"},
		{1 << 30, "1 GiB"},
		{3 << 29, "1.5 GiB"},
		{512 << 20, "512 MiB"},
		{10 << 30, "10 GiB"},
		{2 << 40, "2 TiB"},
		{1<<30 + 1, "1 GiB"},
	}
	for _, c := range cases {
		if got := FormatSize(c.in); got != c.want {
			t.Errorf("FormatSize(%d) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParseCPUs(t *testing.T) {
	for in, want := range map[string]float64{"0.5": 0.5, "2": 2, " 16 ": 16} {
		if got, err := ParseCPUs(in); err != nil || got != want {
			t.Errorf("ParseCPUs(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"0", "-1", "many", "NaN", "Inf"} {
		if _, err := ParseCPUs(in); err == nil {
			t.Errorf("ParseCPUs(%q) succeeded", in)
		}
	}
}

func TestFormatAge(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	cases := map[time.Duration]string{
		0: "0s", 90 * time.Second: "90s", 10 * time.Minute: "10m", 5 * time.Hour: "5h", 72 * time.Hour: "3d", -time.Minute: "0s",
	}
	for d, want := range cases {
		if got := formatAge(now, now.Add(-d).Format(time.RFC3339Nano)); got != want {
			t.Errorf("age %v = %q, want %q", d, got, want)
		}
	}
	if got := formatAge(now, "yesterday"); got != "?" {
		t.Errorf("bad time: %q", got)
	}
}

func TestFormatTime(t *testing.T) {
	now := time.Date(2026, 12, 7, 21, 25, 0, 0, time.UTC)
	for _, c := range []struct{ in, want string }{
		{"2026-12-07T21:22:05.123456789Z", "2026-12-07 21:22:05 UTC (2m ago)"},
		{"2026-12-07T22:22:05+01:00", "2026-12-07 21:22:05 UTC (2m ago)"},
		{"2026-11-07T21:25:00Z", "2026-11-07 21:25:00 UTC (30d ago)"},
		{"2026-12-07T22:25:00Z", "2026-12-07 22:25:00 UTC (in 60m)"},
		{"yesterday", "yesterday"},
	} {
		if got := formatTime(now, c.in); got != c.want {
			t.Errorf("formatTime(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
