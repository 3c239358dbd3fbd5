package template

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
)

// A fetch refused during Update (an object over MaxObjectSize) leaves nothing in the template's repository: no
// tmp_pack_* file of the pack go-git had started to write, and the pin stays.
func TestUpdateRefusedLeavesNoTempPack(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	r := newRegistry(t, Config{Limits: Limits{MaxObjectSize: 1 << 20}})
	before, err := r.Add(t.Context(), "grow", src.dir, "main", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Objects before the refused one, so that part of the pack reaches go-git's writer.
	for i := range 64 {
		data := make([]byte, 64<<10)
		rand.Read(data)
		if err := os.WriteFile(filepath.Join(src.dir, fmt.Sprintf("a%02d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(filepath.Join(src.dir, "bomb"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(16 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	src.commit("bomb")
	_, err = r.Update(t.Context(), "grow", nil)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Update to a commit with a 16 MiB blob, MaxObjectSize 1 MiB: %v, want ErrTooLarge", err)
	}
	packs, err := filepath.Glob(filepath.Join(r.repoPath("grow"), "objects", "pack", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range packs {
		if strings.HasPrefix(filepath.Base(p), "tmp_") {
			t.Errorf("left after the refused fetch: %s", p)
		}
	}
	if got, err := r.Get("grow"); err != nil || got.Commit != before.Commit {
		t.Errorf("after the refused Update: %+v, %v; want the pin at %s", got, err, before.Commit)
	}
}

// A record made before credentials in URLs were refused is fetched with them, and what the fetch fails with
// (go-git's own text and Go's HTTP client's, which name the URL) reaches no reader with the user name or the
// password; nor do the progress messages.
func TestFetchErrorRedactsCredentials(t *testing.T) {
	src := newWorkRepo(t, baseFiles())
	r := newRegistry(t, Config{})
	if _, err := r.Add(t.Context(), "old", src.dir, "main", nil); err != nil {
		t.Fatal(err)
	}
	// A port nobody listens on: connection refused, with the URL in the error.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	secretURL := "http://bbuser:s3cretpw@" + addr + "/r.git"
	// The record and the cache's remote as an old registry made them.
	repo, err := git.PlainOpen(r.repoPath("old"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := repo.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Remotes["origin"] = &config.RemoteConfig{Name: "origin", URLs: []string{secretURL}, Fetch: cfg.Remotes["origin"].Fetch}
	if err := repo.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	rec, release, err := r.begin("old", true)
	if err != nil {
		t.Fatal(err)
	}
	rec.URL = secretURL
	err = r.commitIndex(rec, false)
	release()
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	_, err = r.Update(t.Context(), "old", func(p Progress) { msgs = append(msgs, p.Message) })
	if !errors.Is(err, ErrFetch) {
		t.Fatalf("Update from %s: %v, want ErrFetch", addr, err)
	}
	for _, text := range append(msgs, err.Error()) {
		if strings.Contains(text, "s3cretpw") || strings.Contains(text, "bbuser") {
			t.Errorf("a credential reaches the caller: %q", text)
		}
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the remote %s", err, addr)
	}
	t.Logf("refused: %v", err)
}
