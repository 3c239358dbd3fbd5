package metadata

import "testing"

func TestConstraint(t *testing.T) {
	tests := []struct {
		c     string
		v     string
		allow bool
	}{
		{">=257", "257", true},
		{">=257", "256", false},
		{">=258", "257.9-1~deb13u1", false},
		{">257", "257", false},
		{">257", "258", true},
		{"<=6.1", "6.1.0-13-amd64", true},
		{"<6.1", "6.1.0", false},
		{"==6", "6.0", true},
		{"=6.1", "6.1", true},
		{">=6.0", "5.15.0-100-generic", false},
		{">=6.0", "6.12.48+deb13-amd64", true},
		{">=257, <260", "259", true},
		{">=257, <260", "260", false},
		{" >= 6.0 ", "6.0", true},
	}
	for _, tt := range tests {
		c, err := ParseConstraint(tt.c)
		if err != nil {
			t.Errorf("ParseConstraint(%q): %v", tt.c, err)
			continue
		}
		v, err := ParseVersion(tt.v)
		if err != nil {
			t.Errorf("ParseVersion(%q): %v", tt.v, err)
			continue
		}
		if got := c.Allows(v); got != tt.allow {
			t.Errorf("%q allows %q = %t, want %t", tt.c, tt.v, got, tt.allow)
		}
	}
	for _, bad := range []string{"257", ">=", ">=x", "~>1", ">=1..2", ">=1,", "=>1"} {
		if c, err := ParseConstraint(bad); err == nil {
			t.Errorf("ParseConstraint(%q) = %v, want error", bad, c)
		}
	}
	if _, err := ParseVersion("rolling"); err == nil {
		t.Error("ParseVersion(rolling) succeeded")
	}
}
