package validate

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// prefixed returns nodes moved below prefix.
func prefixed(prefix string, nodes []node) []node {
	out := make([]node, len(nodes))
	for i, n := range nodes {
		n.path = prefix + "/" + n.path
		out[i] = n
	}
	return out
}

func goodMachine() []node {
	return append([]node{
		file("disk-image/efi/EFI/BOOT/BOOTX64.EFI", "MZ"),
		file("disk-image/efi/EFI/systemd/systemd-bootx64.efi", "MZ"),
		file("disk-image/efi/loader/loader.conf", "timeout 0\n"),
		file("disk-image/boot/loader/entries/a.conf", "title A\nlinux /vmlinuz\ninitrd /initrd.img\n"),
		file("disk-image/boot/vmlinuz", "kernel"),
		file("disk-image/boot/initrd.img", "initrd"),
	}, prefixed("disk-image/rootfs", goodRoot())...)
}

// guidBytes encodes a GUID string in GPT's mixed-endian layout.
func guidBytes(t *testing.T, s string) []byte {
	t.Helper()
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		t.Fatalf("bad GUID %q", s)
	}
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b[0:], binary.BigEndian.Uint32(raw[0:]))
	binary.LittleEndian.PutUint16(b[4:], binary.BigEndian.Uint16(raw[4:]))
	binary.LittleEndian.PutUint16(b[6:], binary.BigEndian.Uint16(raw[6:]))
	copy(b[8:], raw[8:])
	return b
}

// writeGPT writes a sparse disk image with a primary GPT holding the given partition types (each 1 MiB,
// from LBA 2048 on); fat formats the first partition's boot sector as FAT32.
func writeGPT(t *testing.T, p string, fat bool, types ...string) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	tbl := make([]byte, 128*128)
	for i, typ := range types {
		e := tbl[i*128:]
		copy(e, guidBytes(t, typ))
		copy(e[16:], guidBytes(t, "01234567-89ab-cdef-0123-456789abcdef"))
		binary.LittleEndian.PutUint64(e[32:], uint64(2048+i*2048))
		binary.LittleEndian.PutUint64(e[40:], uint64(2048+i*2048+2047))
	}
	hdr := make([]byte, 92)
	copy(hdr, "EFI PART")
	binary.LittleEndian.PutUint32(hdr[8:], 0x00010000)
	binary.LittleEndian.PutUint32(hdr[12:], 92)
	binary.LittleEndian.PutUint64(hdr[24:], 1)
	binary.LittleEndian.PutUint64(hdr[72:], 2)
	binary.LittleEndian.PutUint32(hdr[80:], 128)
	binary.LittleEndian.PutUint32(hdr[84:], 128)
	binary.LittleEndian.PutUint32(hdr[88:], crc32.ChecksumIEEE(tbl))
	binary.LittleEndian.PutUint32(hdr[16:], crc32.ChecksumIEEE(hdr))
	if _, err := f.WriteAt(hdr, 512); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(tbl, 1024); err != nil {
		t.Fatal(err)
	}
	if fat {
		bs := make([]byte, 512)
		copy(bs[82:], "FAT32   ")
		bs[510], bs[511] = 0x55, 0xaa
		if _, err := f.WriteAt(bs, 2048*512); err != nil {
			t.Fatal(err)
		}
	}
}

const rootX86 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"

func TestTreeMachine(t *testing.T) {
	tests := []struct {
		name    string
		rm      []string
		add     []node
		gpt     func(t *testing.T, p string)
		rule    string
		sev     Severity
		allowed []string
	}{
		{name: "good"},
		{name: "case-insensitive ESP", rm: []string{"disk-image/efi/EFI"}, add: []node{file("disk-image/efi/efi/boot/bootx64.efi", "MZ"), file("disk-image/efi/efi/Systemd/SYSTEMD-BOOTX64.EFI", "MZ")}},
		{name: "UKI instead of an entry", rm: []string{"disk-image/boot/loader"}, add: []node{file("disk-image/efi/EFI/Linux/bitbuilder.efi", "MZ")}},
		{name: "good GPT image", gpt: func(t *testing.T, p string) { writeGPT(t, p, true, espType, rootX86) }},
		{name: "F51 no disk-image", rm: []string{"disk-image"}, rule: "F51", sev: SeverityError},
		{name: "F51 no ESP", rm: []string{"disk-image/efi"}, rule: "F51", sev: SeverityError, allowed: []string{"F53"}},
		{name: "F51 not GPT", add: []node{file("disk-image/disk.raw", strings.Repeat("\x00", 4096))}, rule: "F51", sev: SeverityError},
		{name: "F51 GPT without ESP", gpt: func(t *testing.T, p string) { writeGPT(t, p, false, rootX86) }, rule: "F51", sev: SeverityError},
		{name: "F51 ESP not VFAT", gpt: func(t *testing.T, p string) { writeGPT(t, p, false, espType, rootX86) }, rule: "F51", sev: SeverityError},
		{name: "F52 no fallback loader", rm: []string{"disk-image/efi/EFI/BOOT"}, rule: "F52", sev: SeverityError},
		{name: "F52 no systemd-boot", rm: []string{"disk-image/efi/EFI/systemd"}, rule: "F52", sev: SeverityError},
		{name: "F53 no entry", rm: []string{"disk-image/boot/loader"}, rule: "F53", sev: SeverityError},
		{name: "F53 missing initrd", rm: []string{"disk-image/boot/initrd.img"}, rule: "F53", sev: SeverityError},
		{name: "F53 entry on the ESP names files on XBOOTLDR", rm: []string{"disk-image/boot/loader"}, add: []node{file("disk-image/efi/loader/entries/a.conf", "linux /vmlinuz\n")}, rule: "F53", sev: SeverityError},
		{name: "F53 entry without kernel", add: []node{file("disk-image/boot/loader/entries/b.conf", "title B\n")}, rule: "F53", sev: SeverityError},
		{name: "F53 kernel in the root's /boot", add: []node{file("disk-image/rootfs/boot/vmlinuz-6.1", "k")}, rule: "F53", sev: SeverityError},
		{name: "F54 root's /efi not empty", add: []node{file("disk-image/rootfs/efi/x", "")}, rule: "F54", sev: SeverityWarning},
		{name: "F54 generic root partition type", gpt: func(t *testing.T, p string) { writeGPT(t, p, true, espType, linuxDataType) }, rule: "F54", sev: SeverityWarning},
		{name: "C24 ESP random seed", add: []node{file("disk-image/efi/loader/random-seed", "x")}, rule: "C24", sev: SeverityWarning},
		{name: "C25 root without init", rm: []string{"disk-image/rootfs/usr/lib/systemd/systemd"}, rule: "C25", sev: SeverityError},
		{name: "X3 artifacts", rm: []string{"disk-image/boot/vmlinuz", "disk-image/efi/EFI/BOOT"}, add: []node{file(ArtifactsFile, `{"artifacts":[{"path":"disk-image/boot/vmlinuz","from":["/boot/vmlinuz-*"]},{"path":"disk-image/efi/EFI/BOOT/BOOTX64.EFI","from":["/usr/lib/systemd/boot/efi/systemd-bootx64.efi"]}]}`)}, rule: "X3", sev: SeverityInfo},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			build(t, dir, goodMachine()...)
			remove(t, dir, tc.rm...)
			build(t, dir, tc.add...)
			if tc.gpt != nil {
				tc.gpt(t, filepath.Join(dir, "disk-image/disk.raw"))
			}
			rep, err := Tree(t.Context(), dir, KindMachine, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if tc.rule == "" {
				if len(rep.Findings) != 0 {
					t.Fatalf("findings:\n%s", dump(rep))
				}
				return
			}
			checkFindings(t, rep, tc.rule, tc.sev, tc.allowed...)
		})
	}
}

func TestTreeKinds(t *testing.T) {
	container := append([]node{file("config/nspawn-settings.conf", "[Exec]\nBoot=yes\n")}, prefixed("rootfs", goodRoot())...)
	homed := []node{
		file("home-skeleton/.profile", "x"),
		file("config/user-record.json", `{"userName":"tenant","disposition":"regular"}`),
		file("config/homed-config.json", `{}`),
	}
	sysext := append([]node{file("metadata.json", `{"template":{"type":"sysext","name":"tools","version":"1"}}`)}, goodSysext("tools")...)
	sysextImage := []node{file("metadata.json", `{"template":{"type":"sysext","name":"tools","version":"1"}}`)}
	tests := []struct {
		name  string
		kind  Kind
		nodes []node
		rm    []string
		rule  string
		sev   Severity
	}{
		{name: "container good", kind: KindContainer, nodes: container},
		{name: "container without init", kind: KindContainer, nodes: container, rm: []string{"rootfs/usr/lib/systemd/systemd"}, rule: "C25", sev: SeverityError},
		{name: "container Boot=no needs no init", kind: KindContainer, nodes: append(container, file("config/nspawn-settings.conf", "[Exec]\nBoot=no\n")), rm: []string{"rootfs/usr/lib/systemd/systemd"}},
		{name: "container without rootfs", kind: KindContainer, nodes: []node{file("config/x", "")}, rule: "C17", sev: SeverityError},
		{name: "infrastructure with init", kind: KindInfrastructure, nodes: container},
		{name: "infrastructure without init", kind: KindInfrastructure, nodes: container, rm: []string{"rootfs/usr/lib/systemd/systemd"}, rule: "C25", sev: SeverityError},
		{name: "init provided by artifacts", kind: KindInfrastructure, nodes: append(container, file(ArtifactsFile, `{"artifacts":[{"path":"rootfs/sbin/init","from":["/usr/bin/busybox"]}]}`)), rm: []string{"rootfs/usr/lib/systemd/systemd"}, rule: "X3", sev: SeverityInfo},
		{name: "homed good", kind: KindHomed, nodes: homed},
		{name: "homed bad user name", kind: KindHomed, nodes: append(homed, file("config/user-record.json", `{"userName":"Bad Name"}`)), rule: "H1", sev: SeverityError},
		{name: "homed record with secrets", kind: KindHomed, nodes: append(homed, file("config/user-record.json", `{"userName":"u","secret":{"password":["x"]}}`)), rule: "H2", sev: SeverityError},
		{name: "homed record with a password hash", kind: KindHomed, nodes: append(homed, file("config/user-record.json", `{"userName":"u","privileged":{"hashedPassword":["$6$x"]}}`)), rule: "H2", sev: SeverityError},
		{name: "homed bad JSON", kind: KindHomed, nodes: append(homed, file("config/homed-config.json", `{`)), rule: "X2", sev: SeverityError},
		{name: "homed FIFO in skeleton", kind: KindHomed, nodes: append(homed, fifo("home-skeleton/fifo")), rule: "C21", sev: SeverityWarning},
		{name: "homed no skeleton", kind: KindHomed, nodes: homed, rm: []string{"home-skeleton"}, rule: "X2", sev: SeverityError},
		{name: "sysext named by metadata.json", kind: KindSysext, nodes: sysext},
		{name: "sysext other name", kind: KindSysext, nodes: append(sysext, file("metadata.json", `{"template":{"type":"sysext","name":"other","version":"1"}}`)), rule: "D27", sev: SeverityError},
		{name: "sysext image", kind: KindSysext, nodes: append(sysextImage, file("tools.sysext.raw", "x")), rule: "D39", sev: SeverityInfo},
		{name: "D39 image not named after the template", kind: KindSysext, nodes: append(sysextImage, file("other.sysext.raw", "x")), rule: "D39", sev: SeverityError},
		{name: "D39 image of the other class", kind: KindSysext, nodes: append(sysextImage, file("tools.confext.raw", "x")), rule: "D39", sev: SeverityError},
		{name: "D39 two images", kind: KindSysext, nodes: append(sysextImage, file("tools.sysext.raw", "x"), file("tools_2.sysext.raw", "x")), rule: "D39", sev: SeverityError},
		{name: "D39 image and tree", kind: KindSysext, nodes: append(sysext, file("tools.sysext.raw", "x")), rule: "D39", sev: SeverityError},
		{name: "container with template images", kind: KindContainer, nodes: append(container, file("extensions/dev.sysext.raw", "x"), file("extensions/mon.confext.raw", "x")), rule: "D39", sev: SeverityInfo},
		{name: "D39 container extensions/ holds another file", kind: KindContainer, nodes: append(container, file("extensions/notes.txt", "x")), rule: "D39", sev: SeverityError},
		{name: "D39 container extensions/ holds a bare .raw", kind: KindContainer, nodes: append(container, file("extensions/dev.raw", "x")), rule: "D39", sev: SeverityError},
		{name: "D39 container extensions/ holds a directory", kind: KindContainer, nodes: append(container, file("extensions/dev.sysext.raw/x", "x")), rule: "D39", sev: SeverityError},
		{name: "D39 container extensions/ holds a symlink", kind: KindContainer, nodes: append(container, link("extensions/dev.sysext.raw", "/etc/passwd")), rule: "D39", sev: SeverityError},
		{name: "D39 container extensions is a file", kind: KindContainer, nodes: append(container, file("extensions", "x")), rule: "D39", sev: SeverityError},
		{name: "D28 container image name", kind: KindContainer, nodes: append(container, file("extensions/a b.sysext.raw", "x")), rule: "D28", sev: SeverityError},
		{name: "network", kind: KindNetwork, nodes: []node{file("br.netdev", "[NetDev]\n"), fifo("x")}, rule: "C21", sev: SeverityWarning},
		{name: "bad artifacts", kind: KindHomed, nodes: append(homed, file(ArtifactsFile, "[")), rule: "X2", sev: SeverityError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			build(t, dir, tc.nodes...)
			remove(t, dir, tc.rm...)
			rep, err := Tree(t.Context(), dir, tc.kind, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if tc.rule == "" {
				if rep.HasErrors() {
					t.Fatalf("errors:\n%s", dump(rep))
				}
				return
			}
			checkFindings(t, rep, tc.rule, tc.sev, "D26")
		})
	}
	// TemplateImages, what the daemon extracts, agrees with the validator.
	tpl := t.TempDir()
	build(t, tpl, append(container, file("extensions/mon.confext.raw", "x"), file("extensions/dev.sysext.raw", "x"))...)
	if imgs, err := TemplateImages(tpl); err != nil || len(imgs) != 2 || imgs[0] != (TemplateImage{File: "dev.sysext.raw", Name: "dev", Class: "sysext"}) || imgs[1] != (TemplateImage{File: "mon.confext.raw", Name: "mon", Class: "confext"}) {
		t.Errorf("TemplateImages = %v, %v", imgs, err)
	}
	build(t, tpl, file("extensions/notes.txt", "x"))
	if _, err := TemplateImages(tpl); err == nil || !strings.Contains(err.Error(), "extensions/notes.txt: rule D39") {
		t.Errorf("TemplateImages with extensions/notes.txt: err = %v", err)
	}
	if _, err := Tree(t.Context(), t.TempDir(), "vm", Options{}); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("unknown kind: err = %v", err)
	}
}

func TestRequiredDirs(t *testing.T) {
	for _, k := range Kinds() {
		dirs := RequiredDirs(k)
		for i, d := range dirs {
			if d.Mode&^(0o777|fs.ModeSticky) != 0 {
				t.Errorf("%s: %s has mode bits beyond permissions and sticky: %v", k, d.Path, d.Mode)
			}
			for _, later := range dirs[i+1:] {
				if strings.HasPrefix(d.Path, later.Path+"/") {
					t.Errorf("%s: %s comes before its parent %s", k, d.Path, later.Path)
				}
			}
		}
	}
	if len(RequiredDirs(KindSysext)) != 0 || len(RequiredDirs(KindContainer)) == 0 {
		t.Error("only trees with a root file system or a home skeleton need directories")
	}
}

// TestReportGolden pins the JSON form of a report (field names, severities, order) for a tree with several
// problems. Run with -update to rewrite testdata/report.golden.json.
func TestReportGolden(t *testing.T) {
	dir := t.TempDir()
	build(t, dir, prefixed("rootfs", goodRoot())...)
	remove(t, dir, "rootfs/proc", "rootfs/usr/lib/systemd/systemd")
	build(t, dir,
		file("rootfs/usr/lib/os-release", "ID=BitBuilder\nNAME=Bit Builder\nID=bitbuilder\n"),
		file("rootfs/etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
		link("rootfs/lib64", "/usr/lib64"),
		fifo("rootfs/var/fifo"),
	)
	rep, err := Tree(t.Context(), dir, KindContainer, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "report.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("report differs from %s (run with -update after checking):\n%s", golden, got)
	}
	if !rep.HasErrors() || len(rep.Errors()) == 0 || len(rep.Warnings()) == 0 {
		t.Errorf("helpers: HasErrors %v, %d errors, %d warnings", rep.HasErrors(), len(rep.Errors()), len(rep.Warnings()))
	}
	var empty Report
	b, _ := json.Marshal(collectorReport())
	if string(b) != `{"findings":[]}` || empty.HasErrors() {
		t.Errorf("empty report marshals as %s", b)
	}
}

func collectorReport() Report { return (&collector{}).report() }

func TestTemplate(t *testing.T) {
	sysext := append([]node{file("metadata.json", `{"template":{"type":"sysext","name":"tools","version":"1"}}`)}, goodSysext("tools")...)
	tests := []struct {
		name  string
		nodes []node
		rule  string
		kind  Kind
	}{
		{name: "sysext", nodes: sysext, kind: KindSysext},
		{name: "type from metadata selects the rules", nodes: append(sysext, file("metadata.json", `{"template":{"type":"confext","name":"tools","version":"1"}}`)), rule: "D26", kind: KindConfext},
		{name: "no metadata", nodes: goodSysext("tools"), rule: "X2"},
		{name: "invalid metadata", nodes: append(sysext, file("metadata.json", `{"template":{"type":"vm","name":"tools","version":"1"}}`)), rule: "X2"},
		{name: "metadata is a FIFO", nodes: append(goodSysext("tools"), fifo("metadata.json")), rule: "X2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			build(t, dir, tc.nodes...)
			rep, md, err := Template(t.Context(), dir, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if tc.rule == "" {
				if len(rep.Findings) != 0 {
					t.Fatalf("findings:\n%s", dump(rep))
				}
			} else {
				checkFindings(t, rep, tc.rule, SeverityError, "D34")
			}
			if (md != nil) != (tc.kind != "") || md != nil && Kind(md.Template.Type) != tc.kind {
				t.Errorf("metadata = %+v, want kind %q", md, tc.kind)
			}
		})
	}
}
