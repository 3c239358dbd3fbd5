package template

import (
	"bytes"
	"context"
	"crypto/sha1"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// gitEnv isolates the git CLI from the machine's configuration.
func gitEnv(home string) []string {
	return append(os.Environ(),
		"HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.invalid",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.invalid",
		"GIT_AUTHOR_DATE=2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z")
}

// git runs the git CLI in dir and returns its trimmed output.
func gitCmd(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv(dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func metaJSON(typ, version string) string {
	return fmt.Sprintf(`{"template":{"type":%q,"name":"test-%s","version":%q},"requirements":{"features":["nspawn"]}}`, typ, typ, version)
}

// workRepo is a non-bare repository made with the git CLI.
type workRepo struct {
	t   testing.TB
	dir string
}

func newWorkRepo(t testing.TB, files map[string]string) *workRepo {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(dir, 0o755)
	gitCmd(t, dir, "init", "-q", "-b", "main")
	r := &workRepo{t: t, dir: dir}
	r.write(files)
	r.commit("initial")
	return r
}

// write writes files; a value starting with "->" makes a symlink, a key
// ending in "*" an executable, a value "<delete>" removes the path.
func (r *workRepo) write(files map[string]string) {
	r.t.Helper()
	for name, content := range files {
		mode := fs.FileMode(0o644)
		if n, ok := strings.CutSuffix(name, "*"); ok {
			name, mode = n, 0o755
		}
		p := filepath.Join(r.dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.Remove(p)
		switch {
		case content == "<delete>":
		case strings.HasPrefix(content, "->"):
			if err := os.Symlink(content[2:], p); err != nil {
				r.t.Fatal(err)
			}
		default:
			if err := os.WriteFile(p, []byte(content), mode); err != nil {
				r.t.Fatal(err)
			}
			os.Chmod(p, mode)
		}
	}
}

func (r *workRepo) commit(msg string) string {
	r.t.Helper()
	gitCmd(r.t, r.dir, "add", "-A")
	gitCmd(r.t, r.dir, "commit", "-q", "--allow-empty", "-m", msg)
	return gitCmd(r.t, r.dir, "rev-parse", "HEAD")
}

func (r *workRepo) git(args ...string) string {
	r.t.Helper()
	return gitCmd(r.t, r.dir, args...)
}

// rawEntry describes an entry of a crafted tree.
type rawEntry struct {
	mode    string // octal as written into the tree object
	name    string
	content string     // blob content
	sub     []rawEntry // for trees
	hash    string     // explicit target (submodules)
}

// writeRawTree stores a tree object built byte by byte, so that names and
// modes Git would never write can be tested.
func writeRawTree(t testing.TB, repo *git.Repository, entries []rawEntry) plumbing.Hash {
	t.Helper()
	var buf bytes.Buffer
	for _, e := range entries {
		var h plumbing.Hash
		switch {
		case e.hash != "":
			h = plumbing.NewHash(e.hash)
		case e.sub != nil:
			h = writeRawTree(t, repo, e.sub)
		default:
			h = writeBlob(t, repo, []byte(e.content))
		}
		fmt.Fprintf(&buf, "%s %s\x00", e.mode, e.name)
		buf.Write(h[:])
	}
	obj := repo.Storer.NewEncodedObject()
	obj.SetType(plumbing.TreeObject)
	w, _ := obj.Writer()
	w.Write(buf.Bytes())
	w.Close()
	h, err := repo.Storer.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func writeBlob(t testing.TB, repo *git.Repository, data []byte) plumbing.Hash {
	t.Helper()
	obj := repo.Storer.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	w, _ := obj.Writer()
	w.Write(data)
	w.Close()
	h, err := repo.Storer.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// craftCommit adds a commit with a crafted root tree (plus a valid
// metadata.json) to the repository at dir and points branch at it.
func craftCommit(t testing.TB, dir, branch string, entries []rawEntry) string {
	t.Helper()
	repo, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	entries = append([]rawEntry{{mode: "100644", name: "metadata.json", content: metaJSON("container", "9")}}, entries...)
	tree := writeRawTree(t, repo, entries)
	sig := object.Signature{Name: "Test", Email: "test@example.invalid"}
	c := &object.Commit{Author: sig, Committer: sig, Message: "crafted", TreeHash: tree}
	obj := repo.Storer.NewEncodedObject()
	if err := c.Encode(obj); err != nil {
		t.Fatal(err)
	}
	h, err := repo.Storer.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Storer.SetReference(plumbing.NewHashReference(plumbing.NewBranchReferenceName(branch), h)); err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// snapshot lists every path under root with its type, mode and a content
// hash, skipping the given subtrees; used to show nothing changed.
func snapshot(t testing.TB, root string, skip ...string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if slices.Contains(skip, p) {
			return filepath.SkipDir
		}
		info, err := os.Lstat(p)
		if err != nil {
			return nil // gone meanwhile
		}
		line := fmt.Sprintf("%s %v", strings.TrimPrefix(p, root), info.Mode())
		if info.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %x", sha1.Sum(data))
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			line += " -> " + l
		}
		out = append(out, line)
		return nil
	})
	sort.Strings(out)
	return out
}

// gitCheckoutOf checks commit of the repository dir out with git into a new directory (with an index of its
// own) and returns that directory: what the registry's checkouts are compared with.
func gitCheckoutOf(t testing.TB, dir, commit string) string {
	t.Helper()
	ref := filepath.Join(t.TempDir(), "ref")
	os.MkdirAll(ref, 0o755)
	cmd := exec.Command("git", "--work-tree="+ref, "checkout", "-q", "-f", commit, "--", ".")
	cmd.Dir = dir
	cmd.Env = append(gitEnv(dir), "GIT_INDEX_FILE="+filepath.Join(t.TempDir(), "index"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git checkout: %v\n%s", err, out)
	}
	return ref
}

// newRegistry makes a Registry on a fresh cache directory.
func newRegistry(t testing.TB, cfg Config) *Registry {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "cache")
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// cacheEntries lists repos/ and tmp/ and whether index.json has templates.
func cacheEntries(t testing.TB, r *Registry) []string {
	t.Helper()
	r.cleanup.Wait()
	idx, err := loadIndex(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range []string{"repos", "tmp"} {
		es, _ := os.ReadDir(filepath.Join(r.dir, d))
		for _, e := range es {
			if tm, ok := idx[keptName(e.Name())]; ok && d == "tmp" && e.Name() == filepath.Base(r.keptPath(tm.Name, tm.Commit)) {
				continue // the verified tree of a pinned commit, kept for its first Materialize
			}
			out = append(out, d+"/"+e.Name())
		}
	}
	for n := range idx {
		out = append(out, "index:"+n)
	}
	sort.Strings(out)
	return out
}

// keptName is the template name in the name of a kept tree ("" for other names).
func keptName(entry string) string {
	rest, ok := strings.CutPrefix(entry, keptPrefix)
	if !ok || len(rest) < 42 {
		return ""
	}
	return rest[41:]
}

// markerValidator refuses trees that contain a file named INVALID, the
// way the UAPI validator refuses trees with errors, and records the kinds.
func markerValidator(kinds *[]string) func(ctx context.Context, dir, kind string) ([]string, error) {
	return func(ctx context.Context, dir, kind string) ([]string, error) {
		if kinds != nil {
			*kinds = append(*kinds, kind)
		}
		if _, err := os.Stat(filepath.Join(dir, "metadata.json")); err != nil {
			return nil, fmt.Errorf("validator got a tree without metadata.json: %w", err)
		}
		if data, err := os.ReadFile(filepath.Join(dir, "INVALID")); err == nil {
			return []string{"INVALID: " + strings.TrimSpace(string(data))}, nil
		}
		return nil, nil
	}
}
