package machines

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestParseImageInfo decodes a real `systemd-dissect --json=short` output of systemd 257 (captured in the test
// host from a plain ext4 sysext image made with mkfs.ext4 -d): the release it found, the class systemd would use
// it as, its one root file system without Verity.
func TestParseImageInfo(t *testing.T) {
	b, err := os.ReadFile("testdata/dissect-257-sysext.json")
	if err != nil {
		t.Fatal(err)
	}
	info, err := ParseImageInfo(b)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "bbi.sysext.raw" || !info.UseSystemExtension || info.UseConfigurationExtension {
		t.Errorf("name/use: %+v", info)
	}
	if want := []string{"ID=debian", "VERSION_ID=13"}; !slices.Equal(info.Release(ClassSysext), want) || info.Release(ClassConfext) != nil {
		t.Errorf("release: sysext %q confext %q, want sysext %q", info.Release(ClassSysext), info.Release(ClassConfext), want)
	}
	if len(info.Mounts) != 1 || info.Mounts[0].Designator != "root" || info.Mounts[0].Fstype != "ext4" || info.Mounts[0].Verity != nil {
		t.Errorf("mounts: %+v", info.Mounts)
	}
	if got := info.Integrity(); got != "no Verity, unsigned" {
		t.Errorf("Integrity() = %q", got)
	}
	if why := CheckExtensionImage(info, ClassSysext); why != "" {
		t.Errorf("CheckExtensionImage(sysext) = %q, want accepted", why)
	}
	if why := CheckExtensionImage(info, ClassConfext); !strings.Contains(why, "D26") {
		t.Errorf("CheckExtensionImage(confext) = %q, want a D26 refusal", why)
	}
	if _, err := ParseImageInfo([]byte("Failed to set up loopback device")); err == nil {
		t.Error("ParseImageInfo accepted text that is not JSON")
	}
}

// TestImageIntegrity: the verity column's values as systemd-dissect prints them.
func TestImageIntegrity(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, tc := range []struct {
		mounts []ImagePartition
		want   string
	}{
		{[]ImagePartition{{Designator: "root", Verity: s("signed")}}, "Verity and signature"},
		{[]ImagePartition{{Designator: "usr", Verity: s("yes")}, {Designator: "esp", Verity: s("signed")}}, "Verity, unsigned"},
		{[]ImagePartition{{Designator: "root", Verity: s("no")}}, "no Verity, unsigned"},
		{nil, "no Verity, unsigned"},
	} {
		if got := (ImageInfo{Mounts: tc.mounts}).Integrity(); got != tc.want {
			t.Errorf("%+v: Integrity() = %q, want %q", tc.mounts, got, tc.want)
		}
	}
	if why := CheckExtensionImage(ImageInfo{SysextRelease: []string{"ID=_any"}, Mounts: []ImagePartition{{Designator: "esp"}}}, ClassSysext); !strings.Contains(why, "no root or usr") {
		t.Errorf("an image without root: %q", why)
	}
}
