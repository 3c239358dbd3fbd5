package netns

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

// prefixIndex finds, for any set of prefixes, every held prefix that overlaps one of them (as a scan of all of
// them does), each once, after additions and removals; shorter prefixes and default routes are always among the
// candidates.
func TestPrefixIndex(t *testing.T) {
	var x prefixIndex[netip.Prefix]
	var all []netip.Prefix
	add := func(s string) {
		p := netip.Prefix{}
		if s != "" {
			p = netip.MustParsePrefix(s)
		}
		x.add(p, p)
		all = append(all, p)
	}
	for i := range 40 {
		add(fmt.Sprintf("10.%d.0.0/24", i))
		add(fmt.Sprintf("10.%d.0.1/32", i))
		add(fmt.Sprintf("10.%d.100.0/24", i))
	}
	for _, s := range []string{"", "10.0.0.0/8", "10.3.0.0/16", "10.4.0.0/15", "192.168.1.0/24", "10.5.7.0/25"} {
		add(s)
	}
	// Removals, and one that empties its /16.
	for _, s := range []string{"10.7.0.0/24", "10.9.0.0/24", "10.9.0.1/32", "10.9.100.0/24"} {
		p := netip.MustParsePrefix(s)
		x.del(p, p)
		all = slices.DeleteFunc(all, func(q netip.Prefix) bool { return q == p })
	}
	if _, ok := x.block[netip.MustParsePrefix("10.9.0.0/16")]; ok {
		t.Error("an emptied /16 is still held")
	}
	for _, q := range [][]string{
		{"10.5.0.0/24"}, {"10.5.0.0/24", "10.5.100.0/24"}, {"10.4.0.0/24"}, {"10.5.7.128/25"}, {"10.9.0.0/24"},
		{"10.0.0.0/12"}, {"10.7.0.0/24", "10.8.0.0/24"}, {"192.168.0.0/16"}, {},
	} {
		var qs []netip.Prefix
		for _, s := range q {
			qs = append(qs, netip.MustParsePrefix(s))
		}
		overlapping := func(p netip.Prefix) bool {
			for _, o := range qs {
				if p.IsValid() && p.Bits() > 0 && p.Masked().Overlaps(o) {
					return true
				}
			}
			return false
		}
		var want, got []netip.Prefix
		for _, p := range all {
			if overlapping(p) || !p.IsValid() {
				want = append(want, p)
			}
		}
		seen := map[netip.Prefix]int{}
		x.candidates(qs, func(p netip.Prefix) {
			if seen[p]++; overlapping(p) || !p.IsValid() {
				got = append(got, p)
			}
		})
		for p, n := range seen {
			if n > 1 {
				t.Errorf("%v: %v offered %d times", q, p, n)
			}
		}
		less := func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr())*64 + a.Bits() - b.Bits() }
		slices.SortFunc(want, less)
		slices.SortFunc(got, less)
		if !slices.Equal(got, want) {
			t.Errorf("%v: found %v, want %v", q, got, want)
		}
		if len(qs) == 1 && qs[0].Bits() >= 16 && len(seen) > 12 {
			t.Errorf("%v: %d candidates looked at, want those of one /16 and the wide ones", q, len(seen))
		}
	}
}
