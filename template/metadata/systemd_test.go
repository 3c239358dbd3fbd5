package metadata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/integration/testhost"
	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
)

const probeEnv = "BITBUILDER_METADATA_PROBE_PRINT"

// TestProbeOnSystemdHost runs ProbeHost inside a booted systemd 257 host
// (this test binary, bound in) and compares what it finds with what
// systemctl and uname say there: the D-Bus path against the real manager.
func TestProbeOnSystemdHost(t *testing.T) {
	testpolicy.Short(t, "boots a systemd host")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := testhost.Start(t, testhost.Options{Name: "probe",
		Binds: []testhost.Bind{{Host: filepath.Dir(exe), Guest: "/opt/probe", ReadOnly: true}}})
	ctx := t.Context()
	out, err := h.Shell(ctx, fmt.Sprintf("%s=1 /opt/probe/%s -test.run='^TestProbePrint$'", probeEnv, filepath.Base(exe)))
	if err != nil {
		t.Fatalf("probe inside the host: %v\n%s", err, out)
	}
	_, line, ok := bytes.Cut(out, []byte("PROBE:"))
	if !ok {
		t.Fatalf("no PROBE line in:\n%s", out)
	}
	line, _, _ = bytes.Cut(line, []byte("\n"))
	var got HostInfo
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	t.Logf("probed inside the host: systemd %d, kernel %s", got.SystemdVersion, got.Kernel)
	version, _, err := h.Run(ctx, "systemctl", "--version")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(version)) // "systemd 257 (257.9-1~deb13u1)"
	if len(fields) < 2 || fields[1] != fmt.Sprint(got.SystemdVersion) {
		t.Errorf("probe says systemd %d (%s), systemctl --version says %q", got.SystemdVersion, got.SystemdUnknown, strings.SplitN(string(version), "\n", 2)[0])
	}
	kernel, _, err := h.Run(ctx, "uname", "-r")
	if err != nil || strings.TrimSpace(string(kernel)) != got.Kernel {
		t.Errorf("probe says kernel %q, uname -r says %q (%v)", got.Kernel, kernel, err)
	}
	for _, f := range []Feature{FeatureNspawn, FeatureMachined, FeatureNetworkd, FeatureVarlink, FeatureSysext, FeatureConfext} {
		if !got.Features[f] {
			t.Errorf("feature %s not found in the systemd 257 host: %v", f, got.Features)
		}
	}
	m, err := Parse([]byte(`{"template":{"type":"container","name":"c","version":"1"},"requirements":{"systemd_version":">=258","features":["nspawn"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	problems := CheckHost(m, got)
	if len(problems) != 1 || problems[0].Message != fmt.Sprintf("requires systemd >=258, host has %d", got.SystemdVersion) {
		t.Errorf("CheckHost in the host = %v", problems)
	}
}

// TestProbePrint is run by TestProbeOnSystemdHost inside the host.
func TestProbePrint(t *testing.T) {
	if os.Getenv(probeEnv) != "1" {
		t.Skip("helper of TestProbeOnSystemdHost")
	}
	data, err := json.Marshal(ProbeHost(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("PROBE:%s\n", data)
}
