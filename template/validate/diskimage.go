package validate

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// efiArch maps systemd architecture ids to the UEFI file name suffix (BOOTX64.EFI, systemd-bootx64.efi).
var efiArch = map[string]string{
	"x86-64": "x64", "x86": "ia32", "arm64": "aa64", "arm": "arm", "riscv64": "riscv64", "loongarch64": "loongarch64",
}

// Partition type GUIDs (UAPI.2 Discoverable Partitions Specification).
const (
	espType       = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
	linuxDataType = "0fc63daf-8483-4772-8e79-3d69d8477de4"
)

var rootTypes = map[string]string{
	"x86-64": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "x86": "44479540-f297-41b2-9af7-d131d5f0458a",
	"arm64": "b921b045-1df0-41c3-af44-4c6f280d3fae", "arm": "69dad710-2ce4-4e3c-b16c-21a1d49abed3",
	"riscv64": "72ec70a6-cf74-40e6-bd49-4bda08e8f224",
}

// checkMachine validates a machine template: disk-image/{efi,boot,rootfs} (directory form) and any raw disk
// images in disk-image/ (rules F51-F54, C24 for the ESP's random seed, and RootFS on the root).
func checkMachine(ctx context.Context, r *root, c *collector, opts Options, arts artifacts) error {
	const di = "disk-image"
	if !r.isDir(di) {
		c.errorf("F51", di, "a machine template needs disk-image/ with efi/, boot/ and rootfs/")
		return nil
	}
	ents, _ := r.readDir(di)
	for _, e := range ents {
		if n := e.Name(); e.Type().IsRegular() && (strings.HasSuffix(n, ".raw") || strings.HasSuffix(n, ".img")) {
			checkGPT(r, c, di+"/"+n, opts.Architecture)
		}
	}
	esp, xbl := di+"/efi", di+"/boot"
	if !r.isDir(esp) {
		c.errorf("F51", esp, "no ESP: create disk-image/efi/ (the EFI system partition's content)")
	} else {
		checkESP(r, c, esp, opts.Architecture, arts)
	}
	checkBootEntries(r, c, []string{esp, xbl}, arts)
	if _, _, err := r.lstat(esp + "/loader/random-seed"); err == nil {
		c.warnf("C24", esp+"/loader/random-seed", "per-instance state must not be in a template: remove it")
	}
	rootfs := di + "/rootfs"
	for _, d := range []string{"boot", "efi"} {
		p := rootfs + "/" + d
		ents, err := r.readDir(p)
		if err != nil || len(ents) == 0 {
			continue
		}
		kernel := false
		for _, e := range ents {
			n := e.Name()
			if strings.HasPrefix(n, "vmlinuz") || strings.HasPrefix(n, "initrd") || strings.HasPrefix(n, "vmlinux") || strings.HasSuffix(strings.ToLower(n), ".efi") {
				kernel = true
				c.errorf("F53", p+"/"+n, "a kernel or initrd in the root file system's /%s is not seen by the boot loader: put it on the ESP (disk-image/efi) or XBOOTLDR (disk-image/boot)", d)
			}
		}
		if !kernel {
			c.warnf("F54", p, "the root file system's /%s should be empty (it is a mount point for the ESP or XBOOTLDR)", d)
		}
	}
	o := opts
	o.Bootable = true
	return checkSubRoot(ctx, r, c, rootfs, o, arts)
}

// findFold finds a path inside dir, matching each component case-insensitively (FAT is case-insensitive).
func findFold(r *root, dir, rel string) (string, bool) {
	cur := dir
	for _, comp := range strings.Split(rel, "/") {
		ents, err := r.readDir(cur)
		if err != nil {
			return "", false
		}
		found := ""
		for _, e := range ents {
			if strings.EqualFold(e.Name(), comp) {
				found = e.Name()
				break
			}
		}
		if found == "" {
			return "", false
		}
		cur = cur + "/" + found
	}
	return cur, true
}

func (a artifacts) hasFold(p string) bool {
	for k := range a.set {
		if strings.EqualFold(k, p) {
			return true
		}
	}
	return false
}

// present reports whether a file exists (case-insensitively) in dir, or is listed in artifacts.json.
func present(r *root, c *collector, dir, rel string, arts artifacts) bool {
	if p, ok := findFold(r, dir, rel); ok {
		_, fi, err := r.stat(p)
		return err == nil && fi.Mode().IsRegular()
	}
	if arts.hasFold(dir + "/" + rel) {
		c.infof("X3", dir+"/"+rel, "provided at materialization (artifacts.json)")
		return true
	}
	return false
}

func checkESP(r *root, c *collector, esp, arch string, arts artifacts) {
	a, ok := efiArch[arch]
	if !ok {
		c.warnf("F52", esp, "no UEFI boot file name is known for architecture %s", arch)
		return
	}
	fallback := "EFI/BOOT/BOOT" + strings.ToUpper(a) + ".EFI"
	if !present(r, c, esp, fallback, arts) {
		c.errorf("F52", esp+"/"+fallback, "missing: a fresh VM's NVRAM has no boot entries, the firmware boots only the fallback path: copy systemd-boot%s.efi there", a)
	}
	sdboot := "EFI/systemd/systemd-boot" + a + ".efi"
	if !present(r, c, esp, sdboot, arts) {
		c.errorf("F52", esp+"/"+sdboot, "missing: install systemd-boot on the ESP (bootctl install --esp-path=...)")
	}
}

// checkBootEntries applies rule F53: a Type #1 entry whose files exist on its partition, or a Type #2 UKI.
func checkBootEntries(r *root, c *collector, parts []string, arts artifacts) {
	found := false
	for _, part := range parts {
		if !r.isDir(part) {
			continue
		}
		if ents, err := r.readDir(part + "/EFI/Linux"); err == nil {
			for _, e := range ents {
				if strings.HasSuffix(strings.ToLower(e.Name()), ".efi") {
					found = true
				}
			}
		}
		for k := range arts.set {
			if strings.HasPrefix(strings.ToLower(k), strings.ToLower(part+"/EFI/Linux/")) && strings.HasSuffix(strings.ToLower(k), ".efi") {
				found = true
			}
		}
		ents, err := r.readDir(part + "/loader/entries")
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".conf") {
				continue
			}
			found = true
			checkEntry(r, c, part, part+"/loader/entries/"+e.Name(), arts)
		}
	}
	if !found {
		c.errorf("F53", "disk-image", "no boot entry: add a Type #1 entry (loader/entries/*.conf with linux and initrd on the same partition) or a UKI in EFI/Linux/ on the ESP or XBOOTLDR")
	}
}

func checkEntry(r *root, c *collector, part, p string, arts artifacts) {
	data, err := r.readFile(p, releaseLimit)
	if err != nil {
		c.errorf("X1", p, "cannot read the boot entry: %s", fileError(err))
		return
	}
	hasKernel := false
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "linux", "efi", "initrd", "devicetree", "uki":
			if f[0] == "linux" || f[0] == "efi" || f[0] == "uki" {
				hasKernel = true
			}
			ref := strings.TrimPrefix(f[1], "/")
			if !present(r, c, part, ref, arts) {
				c.errorf("F53", p, "%s %s: no such file on this partition (%s); entry paths are relative to the partition holding the entry", f[0], f[1], part)
			}
		}
	}
	if !hasKernel {
		c.errorf("F53", p, "the entry names no kernel: add a \"linux\" (and \"initrd\") line, or \"efi\"")
	}
}

// checkGPT applies rules F51 and F54 to a raw disk image: a GPT with a VFAT ESP and a per-arch root partition.
func checkGPT(r *root, c *collector, p, arch string) {
	res, fi, err := r.stat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	fd, err := unix.Open(r.abs(res), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		c.errorf("X1", p, "cannot open: %v", err)
		return
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	parts, err := readGPT(f, fi.Size())
	if err != nil {
		c.errorf("F51", p, "not a GPT disk image: %v", err)
		return
	}
	var esp, rootOK, generic bool
	for _, pt := range parts {
		switch pt.typ {
		case espType:
			esp = true
			if !isVFAT(f, pt.first*512) {
				c.errorf("F51", p, "the ESP (partition %d) is not VFAT-formatted", pt.index)
			}
		case rootTypes[arch]:
			rootOK = true
		case linuxDataType:
			generic = true
		}
	}
	if !esp {
		c.errorf("F51", p, "no EFI system partition (type %s)", espType)
	}
	if !rootOK {
		if generic {
			c.warnf("F54", p, "the root partition uses the generic Linux data type; use the %s root type %s so it is discovered", arch, rootTypes[arch])
		} else {
			c.warnf("F54", p, "no %s root partition (type %s)", arch, rootTypes[arch])
		}
	}
}

type gptPart struct {
	index int
	typ   string
	first int64
}

// readGPT reads the primary GPT of a disk image (512-byte sectors), verifying the header and entry CRCs.
func readGPT(f *os.File, size int64) ([]gptPart, error) {
	hdr := make([]byte, 512)
	if _, err := f.ReadAt(hdr, 512); err != nil {
		return nil, fmt.Errorf("cannot read LBA 1: %w", err)
	}
	if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
		return nil, fmt.Errorf("no \"EFI PART\" signature at LBA 1")
	}
	hsize := binary.LittleEndian.Uint32(hdr[12:16])
	if hsize < 92 || hsize > 512 {
		return nil, fmt.Errorf("bad header size %d", hsize)
	}
	h := append([]byte(nil), hdr[:hsize]...)
	want := binary.LittleEndian.Uint32(h[16:20])
	clear(h[16:20])
	if crc32.ChecksumIEEE(h) != want {
		return nil, fmt.Errorf("header CRC mismatch")
	}
	lba := int64(binary.LittleEndian.Uint64(hdr[72:80]))
	n := binary.LittleEndian.Uint32(hdr[80:84])
	esz := binary.LittleEndian.Uint32(hdr[84:88])
	if esz < 128 || esz > 4096 || n > 1024 || int64(n)*int64(esz) > 1<<20 || lba*512 > size {
		return nil, fmt.Errorf("implausible partition table (%d entries of %d bytes at LBA %d)", n, esz, lba)
	}
	tbl := make([]byte, int(n)*int(esz))
	if _, err := f.ReadAt(tbl, lba*512); err != nil {
		return nil, fmt.Errorf("cannot read the partition entries: %w", err)
	}
	if crc32.ChecksumIEEE(tbl) != binary.LittleEndian.Uint32(hdr[88:92]) {
		return nil, fmt.Errorf("partition entry CRC mismatch")
	}
	var parts []gptPart
	for i := 0; i < int(n); i++ {
		e := tbl[i*int(esz):]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue
		}
		parts = append(parts, gptPart{index: i + 1, typ: guidString(e[:16]), first: int64(binary.LittleEndian.Uint64(e[32:40]))})
	}
	return parts, nil
}

// guidString formats a GPT GUID (mixed-endian) in lowercase.
func guidString(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
}

// isVFAT reports whether the partition at off starts with a FAT boot sector.
func isVFAT(f *os.File, off int64) bool {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, off); err != nil {
		return false
	}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return false
	}
	return bytes.HasPrefix(bs[54:], []byte("FAT")) || bytes.HasPrefix(bs[82:], []byte("FAT"))
}
