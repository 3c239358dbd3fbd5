package daemon

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
)

// A template recorded before credentials in URLs were refused: what its failing Update answers (FetchFailed's url
// and message, which go-git and Go's HTTP client write with the URL in it), its progress and Get carry neither
// the user name nor the password.
func TestTemplateRepliesRedactCredentials(t *testing.T) {
	repo := gitRepoFrom(t, "../examples/templates/sysext")
	state := t.TempDir()
	d := startDaemonIn(t, t.TempDir(), state)
	if r := dial(t, d.socket).callMore("io.bitbuilder.Template.Add", fmt.Sprintf(`{"name":"old","url":%q,"ref":"main"}`, repo)); r[len(r)-1].Error != "" {
		t.Fatalf("Add: %+v", r[len(r)-1])
	}
	d.stop(t)

	// As an old registry left it: the URL with credentials in the index and as the cache's remote. Nobody
	// listens on the port, so the fetch fails with the URL in its error.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	l.Close()
	secretURL := "http://bbuser:s3cretpw@" + addr + "/r.git"
	index := filepath.Join(state, "templates", "index.json")
	data, err := os.ReadFile(index)
	must(t, err)
	quoted, _ := json.Marshal(repo)
	secret, _ := json.Marshal(secretURL)
	if !strings.Contains(string(data), string(quoted)) {
		t.Fatalf("index.json does not hold %s:\n%s", quoted, data)
	}
	must(t, os.WriteFile(index, []byte(strings.ReplaceAll(string(data), string(quoted), string(secret))), 0o600))
	cache, err := gogit.PlainOpen(filepath.Join(state, "templates", "repos", "old.git"))
	must(t, err)
	cfg, err := cache.Config()
	must(t, err)
	cfg.Remotes["origin"] = &config.RemoteConfig{Name: "origin", URLs: []string{secretURL}, Fetch: cfg.Remotes["origin"].Fetch}
	must(t, cache.SetConfig(cfg))

	d = startDaemonIn(t, t.TempDir(), state)
	c := dial(t, d.socket)
	replies := c.callMore("io.bitbuilder.Template.Update", `{"name":"old"}`)
	replies = append(replies, c.call("io.bitbuilder.Template.Get", `{"name":"old"}`))
	if last := replies[len(replies)-2]; last.Error != "io.bitbuilder.Template.FetchFailed" || !strings.Contains(fmt.Sprint(last.Parameters), addr) {
		t.Errorf("Update: %+v, want FetchFailed naming %s", last, addr)
	}
	for _, r := range replies {
		text, _ := json.Marshal(r)
		if strings.Contains(string(text), "s3cretpw") || strings.Contains(string(text), "bbuser") {
			t.Errorf("a credential reaches the client: %s", text)
		}
	}
	t.Logf("Update: %+v", replies[len(replies)-2])
}
