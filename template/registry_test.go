package template

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bitbuilder/bitbuilder/template/metadata"
)

func baseFiles() map[string]string {
	return map[string]string{
		"metadata.json":               metaJSON("container", "1.0.0"),
		"rootfs/usr/lib/os-release":   "ID=test\nVERSION_ID=1\n",
		"rootfs/etc/os-release":       "->../usr/lib/os-release",
		"scripts/init.sh*":            "#!/bin/sh\necho hi\n",
		"config/nspawn-settings.conf": "[Exec]\nBoot=yes\n",
	}
}

func TestAddResolvesRefs(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	first := src.git("rev-parse", "HEAD")
	src.git("tag", "v1")
	src.git("tag", "-a", "-m", "annotated", "v1-annotated")
	src.git("checkout", "-q", "-b", "dev")
	src.write(map[string]string{"metadata.json": metaJSON("container", "2.0.0")})
	dev := src.commit("dev work")
	src.git("checkout", "-q", "main")

	tests := []struct {
		name, url, ref string
		wantCommit     string
		wantRef        string
		wantVersion    string
	}{
		{"default branch", src.dir, "", first, "refs/heads/main", "1.0.0"},
		{"branch", src.dir, "dev", dev, "refs/heads/dev", "2.0.0"},
		{"full branch ref", "file://" + src.dir, "refs/heads/dev", dev, "refs/heads/dev", "2.0.0"},
		{"lightweight tag", src.dir, "v1", first, "refs/tags/v1", "1.0.0"},
		{"annotated tag", src.dir, "v1-annotated", first, "refs/tags/v1-annotated", "1.0.0"},
		{"commit hash", src.dir, dev, dev, "", "2.0.0"},
	}
	var kinds []string
	r := newRegistry(t, Config{Validate: markerValidator(&kinds)})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "t" + string(rune('a'+i))
			got, err := r.Add(t.Context(), name, tt.url, tt.ref, nil)
			if err != nil {
				t.Fatalf("Add: %v", err)
			}
			if got.Commit != tt.wantCommit || got.ResolvedRef != tt.wantRef || got.Version != tt.wantVersion ||
				got.Type != metadata.TypeContainer || got.MetadataName != "test-container" || got.URL != tt.url || got.Ref != tt.ref {
				t.Errorf("Add = %+v, want commit %s ref %s version %s", got, tt.wantCommit, tt.wantRef, tt.wantVersion)
			}
			if g, err := r.Get(name); err != nil || g.Commit != got.Commit {
				t.Errorf("Get = %+v, %v", g, err)
			}
			// The cache is a real bare repository that git can read, with the pin ref.
			bare := r.repoPath(name)
			if c := gitCmd(t, bare, "rev-parse", "refs/bitbuilder/pins/"+got.Commit); c != got.Commit {
				t.Errorf("pin ref = %s", c)
			}
			if c := gitCmd(t, bare, "rev-parse", "refs/heads/dev"); c != dev {
				t.Errorf("cached dev = %s, want %s", c, dev)
			}
		})
	}
	if len(kinds) != len(tests) || slices.IndexFunc(kinds, func(k string) bool { return k != "container" }) >= 0 {
		t.Errorf("validator kinds = %v", kinds)
	}
	var names []string
	for _, tm := range r.List() {
		names = append(names, tm.Name)
	}
	if !slices.Equal(names, []string{"ta", "tb", "tc", "td", "te", "tf"}) {
		t.Errorf("List names = %v", names)
	}
}

func TestAddFailuresLeaveNothing(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	unreachable := newWorkRepo(t, baseFiles())
	unreachable.write(map[string]string{"x": "y"})
	orphan := unreachable.commit("not in src")

	bad := func(files map[string]string) string {
		w := newWorkRepo(t, baseFiles())
		w.write(files)
		w.commit("bad")
		return w.dir
	}
	tests := []struct {
		name, tname, url, ref string
		is                    error
		contains              string
	}{
		{"bad name upper", "Web", src.dir, "", ErrInvalidName, `upper-case letter 'W' at position 0`},
		{"bad name long", strings.Repeat("a", 64), src.dir, "", ErrInvalidName, "longer than 63"},
		{"bad name dash", "-x", src.dir, "", ErrInvalidName, "start and end with a letter or digit"},
		{"bad name dot", "a.b", src.dir, "", ErrInvalidName, `'.'`},
		{"relative url", "x", "relative/path", "", ErrInvalidField, "invalid url"},
		{"ftp url", "x", "ftp://host/repo", "", ErrInvalidField, `scheme "ftp"`},
		{"url option", "x", "--upload-pack=touch", "", ErrInvalidField, "'-'"},
		{"bad ref", "x", src.dir, "a..b", ErrInvalidField, "invalid ref"},
		{"missing path", "x", filepath.Join(t.TempDir(), "nothing"), "", ErrFetch, "fetch"},
		{"missing branch", "x", src.dir, "nope", ErrNoSuchRef, `no such branch or tag (the remote has: main)`},
		{"commit not reachable", "x", src.dir, orphan, ErrNoSuchRef, "no commit with this hash"},
		{"metadata not json", "x", bad(map[string]string{"metadata.json": "{not json"}), "", ErrInvalidMetadata, "metadata.json: metadata.json: $: not valid JSON"},
		{"metadata unknown field", "x", bad(map[string]string{"metadata.json": `{"template":{"type":"machine","name":"m","version":"1","colour":"red"}}`}), "", ErrInvalidMetadata, "$.template.colour: unknown field"},
		{"metadata wrong type", "x", bad(map[string]string{"metadata.json": `{"template":{"type":"machine","name":"m","version":1}}`}), "", ErrInvalidMetadata, "$.template.version: expected a string, got the number 1"},
		{"metadata missing", "x", bad(map[string]string{"metadata.json": "<delete>"}), "", ErrInvalidMetadata, "missing at the root"},
		{"metadata symlink", "x", bad(map[string]string{"metadata.json": "->config/nspawn-settings.conf"}), "", ErrInvalidMetadata, "must be a regular file"},
		{"does not validate", "x", bad(map[string]string{"INVALID": "no os-release"}), "", ErrValidation, "INVALID: no os-release"},
	}
	r := newRegistry(t, Config{Validate: markerValidator(nil)})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Add(t.Context(), tt.tname, tt.url, tt.ref, nil)
			if !errors.Is(err, tt.is) {
				t.Fatalf("Add error = %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not contain %q", err, tt.contains)
			}
			if left := cacheEntries(t, r); len(left) != 0 {
				t.Errorf("cache not empty after failure: %v", left)
			}
		})
	}
}

func TestAddExists(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	r := newRegistry(t, Config{})
	if _, err := r.Add(t.Context(), "web", src.dir, "", nil); err != nil {
		t.Fatal(err)
	}
	before := cacheEntries(t, r)
	if _, err := r.Add(t.Context(), "web", src.dir, "main", nil); !errors.Is(err, ErrExists) {
		t.Fatalf("second Add = %v, want ErrExists", err)
	}
	if after := cacheEntries(t, r); !slices.Equal(before, after) {
		t.Errorf("cache changed: %v -> %v", before, after)
	}
}

func TestUpdate(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	c1 := src.git("rev-parse", "HEAD")
	r := newRegistry(t, Config{Validate: markerValidator(nil)})
	ctx := t.Context()
	if _, err := r.Add(ctx, "web", src.dir, "main", nil); err != nil {
		t.Fatal(err)
	}

	// Unchanged remote: nothing moves.
	got, err := r.Update(ctx, "web", nil)
	if err != nil || got.Commit != c1 || len(got.PreviousCommits) != 0 {
		t.Fatalf("Update (unchanged) = %+v, %v", got, err)
	}

	// The repository changes between Add and Update.
	src.write(map[string]string{"metadata.json": metaJSON("container", "1.1.0"), "rootfs/etc/hostname": "web\n"})
	c2 := src.commit("second")
	got, err = r.Update(ctx, "web", nil)
	if err != nil || got.Commit != c2 || got.Version != "1.1.0" || !slices.Equal(got.PreviousCommits, []string{c1}) {
		t.Fatalf("Update (new commit) = %+v, %v", got, err)
	}

	// A commit that no longer validates: the pin stays.
	src.write(map[string]string{"INVALID": "broken os-release"})
	c3 := src.commit("third, invalid")
	_, err = r.Update(ctx, "web", nil)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Commit != c3 || !strings.Contains(err.Error(), "pin stays at "+c2[:12]) {
		t.Fatalf("Update (invalid) = %v, want ValidationError for %s naming the pin", err, c3)
	}
	if g, _ := r.Get("web"); g.Commit != c2 {
		t.Errorf("pin moved to %s after a failed update", g.Commit)
	}

	// Broken metadata: the pin stays too.
	src.write(map[string]string{"INVALID": "<delete>", "metadata.json": `{"template":{"type":"pod","name":"x","version":"1"}}`})
	src.commit("fourth, bad metadata")
	if _, err := r.Update(ctx, "web", nil); !errors.Is(err, ErrInvalidMetadata) || !strings.Contains(err.Error(), "$.template.type") {
		t.Fatalf("Update (bad metadata) = %v", err)
	}

	// A force-pushed branch: history rewritten to drop the bad commits.
	src.git("reset", "-q", "--hard", c2)
	src.write(map[string]string{"rootfs/etc/motd": "rewritten\n"})
	c5 := src.commit("rewritten history")
	var msgs []string
	got, err = r.Update(ctx, "web", func(p Progress) { msgs = append(msgs, string(p.Phase)+": "+p.Message) })
	if err != nil || got.Commit != c5 || !slices.Equal(got.PreviousCommits, []string{c2, c1}) {
		t.Fatalf("Update (force-push) = %+v, %v", got, err)
	}
	if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, "force-pushed") }) {
		t.Errorf("no force-push message in progress: %v", msgs)
	}
	if c := gitCmd(t, r.repoPath("web"), "rev-parse", "refs/heads/main"); c != c5 {
		t.Errorf("cached main = %s, want %s", c, c5)
	}

	// The branch is deleted upstream: clear error, pin stays, old commits
	// stay in the cache.
	src.git("checkout", "-q", "-b", "other")
	src.git("branch", "-D", "main")
	_, err = r.Update(ctx, "web", nil)
	var re *RefError
	if !errors.As(err, &re) || !re.Deleted || !strings.Contains(err.Error(), "refs/heads/main no longer exists") ||
		!strings.Contains(err.Error(), "pin stays at "+c5[:12]) {
		t.Fatalf("Update (deleted branch) = %v", err)
	}
	if g, _ := r.Get("web"); g.Commit != c5 {
		t.Errorf("pin moved after the branch was deleted: %s", g.Commit)
	}
	// Rollback to a previous pin works from the cache.
	got, err = r.Pin(ctx, "web", c1)
	if err != nil || got.Commit != c1 || got.Version != "1.0.0" || !slices.Equal(got.PreviousCommits, []string{c5, c2}) {
		t.Fatalf("Pin(c1) = %+v, %v", got, err)
	}
}

func TestPin(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	c1 := src.git("rev-parse", "HEAD")
	src.write(map[string]string{"INVALID": "bad"})
	bad := src.commit("invalid")
	src.write(map[string]string{"INVALID": "<delete>", "metadata.json": metaJSON("container", "3")})
	c3 := src.commit("good again")
	r := newRegistry(t, Config{Validate: markerValidator(nil)})
	ctx := t.Context()
	if _, err := r.Add(ctx, "web", src.dir, "main", nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, commit string
		is           error
		want         string // pinned commit afterwards
	}{
		{"older commit", c1, nil, c1},
		{"same again", c1, nil, c1},
		{"invalid commit", bad, ErrValidation, c1},
		{"short hash", c3[:12], ErrInvalidField, c1},
		{"uppercase", strings.ToUpper(c3), ErrInvalidField, c1},
		{"unknown commit", strings.Repeat("ab", 20), ErrNoSuchRef, c1},
		{"back to newest", c3, nil, c3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Pin(ctx, "web", tt.commit)
			if !errors.Is(err, tt.is) || (tt.is == nil) != (err == nil) {
				t.Fatalf("Pin = %v, want %v", err, tt.is)
			}
			if g, _ := r.Get("web"); g.Commit != tt.want {
				t.Errorf("pinned %s, want %s", g.Commit, tt.want)
			}
		})
	}
	if _, err := r.Pin(ctx, "nope", c1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Pin(unknown template) = %v", err)
	}
}

func TestRemove(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	r := newRegistry(t, Config{})
	ctx := t.Context()
	if _, err := r.Add(ctx, "web", src.dir, "", nil); err != nil {
		t.Fatal(err)
	}
	err := r.Remove(ctx, "web", func(name string) []string { return []string{"zeta", "alpha"} })
	var iu *InUseError
	if !errors.As(err, &iu) || !slices.Equal(iu.Tenants, []string{"alpha", "zeta"}) || !strings.Contains(err.Error(), "used by tenants alpha, zeta") {
		t.Fatalf("Remove in use = %v", err)
	}
	if _, err := r.Get("web"); err != nil {
		t.Fatalf("template gone after refused Remove: %v", err)
	}
	if err := r.Remove(ctx, "web", func(string) []string { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("web"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove = %v", err)
	}
	if left := cacheEntries(t, r); len(left) != 0 {
		t.Errorf("cache after Remove: %v", left)
	}
	if err := r.Remove(ctx, "web", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove = %v", err)
	}
	// The name can be used again.
	if _, err := r.Add(ctx, "web", src.dir, "", nil); err != nil {
		t.Errorf("Add after Remove: %v", err)
	}
}

func TestReopenAndLeftovers(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	dir := filepath.Join(t.TempDir(), "cache")
	r, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	added, err := r.Add(t.Context(), "web", src.dir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Dir: dir}); !errors.Is(err, ErrBusy) {
		t.Errorf("second New on the same cache = %v, want ErrBusy", err)
	}
	r.Close()

	// Leftovers of an interrupted Add and a crashed verify.
	os.MkdirAll(filepath.Join(dir, "repos", ".x.new-123", "objects"), 0o755)
	os.MkdirAll(filepath.Join(dir, "repos", "orphan.git"), 0o755)
	os.MkdirAll(filepath.Join(dir, "tmp", "verify-web-1", "rootfs"), 0o755)
	r2 := newRegistry(t, Config{Dir: dir})
	got, err := r2.Get("web")
	if err != nil || got.Commit != added.Commit || !got.AddedAt.Equal(added.AddedAt) {
		t.Fatalf("after reopen Get = %+v, %v", got, err)
	}
	if left := cacheEntries(t, r2); !slices.Equal(left, []string{"index:web", "repos/web.git"}) {
		t.Errorf("cache after reopen: %v", left)
	}
	r2.Close()

	// A corrupt index is reported, not overwritten.
	os.WriteFile(filepath.Join(dir, indexFile), []byte(`{"version":1,"templates":[{"name":"web","bogus":1}]}`), 0o600)
	if _, err := New(Config{Dir: dir}); !errors.Is(err, ErrStorage) || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("New with corrupt index = %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, indexFile)); !strings.Contains(string(data), "bogus") {
		t.Error("corrupt index was overwritten")
	}
	if _, err := New(Config{Dir: "relative"}); !errors.Is(err, ErrInvalidField) {
		t.Errorf("New(relative dir) = %v", err)
	}
}

func TestProgressPhases(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	r := newRegistry(t, Config{Validate: markerValidator(nil)})
	var phases []Phase
	_, err := r.Add(t.Context(), "web", src.dir, "", func(p Progress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Phase{PhaseFetching, PhaseCheckout, PhaseValidating, PhasePinning}
	if !slices.Equal(phases, want) {
		t.Errorf("phases = %v, want %v", phases, want)
	}
}

func TestConcurrentAddSameName(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	r := newRegistry(t, Config{})
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := r.Add(t.Context(), "web", src.dir, "", nil)
			errs <- err
		}()
	}
	ok := 0
	for range n {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrExists):
			t.Errorf("concurrent Add: %v, want nil or ErrExists", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent Adds succeeded, want 1", ok, n)
	}
	if left := cacheEntries(t, r); !slices.Equal(left, []string{"index:web", "repos/web.git"}) {
		t.Errorf("cache: %v", left)
	}
}

func TestAddCanceled(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	r := newRegistry(t, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.Add(ctx, "web", src.dir, "", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Add with a canceled context = %v", err)
	}
	// Canceled while validating.
	ctx, cancel = context.WithCancel(t.Context())
	r2 := newRegistry(t, Config{Validate: func(ctx context.Context, dir, kind string) ([]string, error) {
		cancel()
		return nil, ctx.Err()
	}})
	if _, err := r2.Add(ctx, "web", src.dir, "", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Add canceled in validation = %v", err)
	}
	for _, reg := range []*Registry{r, r2} {
		if left := cacheEntries(t, reg); len(left) != 0 {
			t.Errorf("cache: %v", left)
		}
		es, _ := os.ReadDir(reg.dir)
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		if !slices.Equal(names, []string{"lock", "repos", "tmp"}) {
			t.Errorf("cache dir holds %v", names)
		}
	}
}

func TestMetadata(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	c1 := src.git("rev-parse", "HEAD")
	src.write(map[string]string{"metadata.json": `{"template":{"type":"machine","name":"vm","version":"2"},"requirements":{"systemd_version":">=258","features":["vmspawn"]}}`})
	c2 := src.commit("machine")
	r := newRegistry(t, Config{})
	if _, err := r.Add(t.Context(), "web", src.dir, c1, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		commit  string
		typ     metadata.Type
		version string
		is      error
	}{
		{"", metadata.TypeContainer, "1.0.0", nil},
		{c1, metadata.TypeContainer, "1.0.0", nil},
		{c2, metadata.TypeMachine, "2", nil},
		{strings.Repeat("0", 40), "", "", ErrNoSuchRef},
		{"HEAD", "", "", ErrInvalidField},
	}
	for _, tt := range tests {
		md, err := r.Metadata("web", tt.commit)
		if !errors.Is(err, tt.is) || (tt.is == nil) != (err == nil) {
			t.Errorf("Metadata(%q) error %v, want %v", tt.commit, err, tt.is)
			continue
		}
		if err == nil && (md.Template.Type != tt.typ || md.Template.Version != tt.version) {
			t.Errorf("Metadata(%q) = %+v", tt.commit, md.Template)
		}
	}
	md, _ := r.Metadata("web", c2)
	problems := metadata.CheckHost(md, metadata.HostInfo{SystemdVersion: 257, Features: map[metadata.Feature]bool{metadata.FeatureVmspawn: true}})
	if len(problems) != 1 || problems[0].Message != "requires systemd >=258, host has 257" {
		t.Errorf("CheckHost = %v", problems)
	}
}
