package machines

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/bitbuilder/bitbuilder/internal/atomicfile"
	"github.com/bitbuilder/bitbuilder/internal/treefile"
)

// Copy is one tree Prepare copies: Src (a template's tree) to Dst (below the machine's directory).
type Copy struct {
	Src, Dst string
}

// commitFile is the file in a machine's directory that records which template commit its root was made from.
const commitFile = "commit"

// RootCommit returns the template commit machine directory dir's root was made from, "" when it has none.
func RootCommit(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, commitFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Prepare makes each Dst a private copy of its Src, then records commit in dir (the machine's directory).
// Each copy is made in a temporary directory beside Dst and renamed into place, replacing an older Dst, so a
// crash leaves the old root or the new one, and the commit is recorded only once every copy is in place. It
// must not run while the machine runs.
func Prepare(ctx context.Context, dir, commit string, copies []Copy) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, commitFile))
	for _, c := range copies {
		fi, err := os.Lstat(c.Src)
		if err != nil {
			return fmt.Errorf("template tree: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("template tree %s is not a directory", c.Src)
		}
		tmp := c.Dst + ".new"
		if err := RemoveTree(tmp); err != nil {
			return err
		}
		// cp -a keeps modes, ownership, links and times; --reflink=auto shares the blocks on
		// file systems that can (btrfs, XFS) and copies elsewhere.
		cmd := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", "--no-target-directory", c.Src, tmp)
		if out, err := cmd.CombinedOutput(); err != nil {
			RemoveTree(tmp)
			return fmt.Errorf("copy %s: %w: %s", c.Src, err, bytes.TrimSpace(out))
		}
		if err := os.Chmod(tmp, 0o755); err != nil {
			RemoveTree(tmp)
			return err
		}
		if err := RemoveTree(c.Dst); err != nil {
			RemoveTree(tmp)
			return err
		}
		if err := os.Rename(tmp, c.Dst); err != nil {
			RemoveTree(tmp)
			return err
		}
	}
	return atomicfile.WriteFile(filepath.Join(dir, commitFile), []byte(commit+"\n"), atomicfile.Options{})
}

// MountsBelow returns the mount points at or below dir, deepest first, from /proc/self/mountinfo.
func MountsBelow(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return slices.Compact(out), sc.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, ...) of /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := (s[i+1]-'0')*64 + (s[i+2]-'0')*8 + (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// RemoveTree unmounts everything mounted at or below dir (deepest first; lazily if busy) and then removes
// dir, never crossing into another file system. A missing dir is not an error.
func RemoveTree(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	mounts, err := MountsBelow(dir)
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if err := syscall.Unmount(m, 0); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				return fmt.Errorf("unmount %s: %w", m, err)
			}
		}
	}
	return os.RemoveAll(dir)
}

// TreeSize returns the bytes that the files below dir take on disk (st_blocks), without following links.
func TreeSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	return total, err
}

// MaxSettingsSize bounds a template's nspawn settings file.
const MaxSettingsSize = 64 << 10

// ReadTemplateFile reads the regular file rel below root (a template tree) with treefile.Read: no symlink
// followed anywhere on the way, at most max bytes. A missing file gives nil and no error.
func ReadTemplateFile(root, rel string, max int64) ([]byte, error) {
	data, err := treefile.Read(root, rel, max)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, &SettingsError{Path: rel, Reason: pe.Err.Error()}
		}
		return nil, &SettingsError{Path: rel, Reason: err.Error()}
	}
	return data, nil
}

// allowedSettings are the systemd.nspawn(5) settings a template may set. Everything that widens what the
// container may reach on the host (Bind=, Capability=, PrivateUsers=, network settings, ...) or that the daemon
// decides (Boot=, the network, user namespacing) is dropped.
var allowedSettings = map[string][]string{
	"Exec":  {"Environment", "WorkingDirectory", "Timezone", "LinkJournal", "NotifyReady", "KillSignal", "Personality", "NoNewPrivileges", "OOMScoreAdjust", "SystemCallFilter", "LimitNOFILE", "LimitNPROC"},
	"Files": {"ReadOnly", "Volatile", "TemporaryFileSystem", "Inaccessible"},
}

// SanitizeNspawnSettings returns the settings of a template's .nspawn file that a template may set (see
// allowedSettings), and the "Section.Key" of each one it dropped.
func SanitizeNspawnSettings(data []byte) (out []byte, dropped []string) {
	var b bytes.Buffer
	b.WriteString("# Written by BitBuilder from the template's config/nspawn-settings.conf: only the settings a template may set.\n")
	section := ""
	wroteSection := ""
	for _, line := range strings.Split(string(data), "\n") {
		l := strings.TrimSpace(line)
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			section = l[1 : len(l)-1]
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		k = strings.TrimSpace(k)
		if !ok || !slices.Contains(allowedSettings[section], k) || strings.HasSuffix(v, `\`) {
			dropped = append(dropped, section+"."+k)
			continue
		}
		if wroteSection != section {
			fmt.Fprintf(&b, "\n[%s]\n", section)
			wroteSection = section
		}
		fmt.Fprintf(&b, "%s=%s\n", k, strings.TrimSpace(v))
	}
	return b.Bytes(), dropped
}

// TapOf returns the name of the tap device that process pid, or one of its children, holds open (the "iff:" line
// of a /dev/net/tun descriptor's fdinfo): the tap of a VM whose leader is pid. "" when there is none.
func TapOf(pid int) (string, error) {
	seen := map[int]bool{}
	var walk func(p, depth int) (string, error)
	walk = func(p, depth int) (string, error) {
		if seen[p] || depth > 3 {
			return "", nil
		}
		seen[p] = true
		dir := fmt.Sprintf("/proc/%d/fdinfo", p)
		entries, err := os.ReadDir(dir)
		if err != nil {
			return "", err
		}
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(line, "iff:"); ok {
					return strings.TrimSpace(v), nil
				}
			}
		}
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, tk := range tasks {
			kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", p, tk.Name()))
			for _, k := range strings.Fields(string(kids)) {
				var c int
				if _, err := fmt.Sscan(k, &c); err == nil {
					if tap, err := walk(c, depth+1); err == nil && tap != "" {
						return tap, nil
					}
				}
			}
		}
		return "", nil
	}
	return walk(pid, 0)
}
