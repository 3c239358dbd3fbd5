package template

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPort(t *testing.T, addr string) {
	t.Helper()
	for range 100 {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

// gitDaemon serves the repositories under base with `git daemon` on
// 127.0.0.1 and returns the git:// URL prefix and a stop function.
func gitDaemon(t *testing.T, base string) (string, func()) {
	t.Helper()
	port := freePort(t)
	// Run git-daemon itself: `git daemon` would leave it behind when killed.
	daemon := filepath.Join(gitCmd(t, base, "--exec-path"), "git-daemon")
	cmd := exec.Command(daemon, "--export-all", "--reuseaddr", "--informative-errors",
		"--base-path="+base, "--listen=127.0.0.1", fmt.Sprintf("--port=%d", port), base)
	cmd.Env = gitEnv(base)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) }
	t.Cleanup(stop)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitPort(t, addr)
	return "git://" + addr + "/", stop
}

// httpsBackend serves base with git-http-backend behind net/http/cgi on a
// TLS server on 127.0.0.1, returning the URL prefix and the CA in PEM.
func httpsBackend(t *testing.T, base string) (string, []byte) {
	t.Helper()
	execPath := gitCmd(t, base, "--exec-path")
	srv := httptest.NewUnstartedServer(&cgi.Handler{
		Path: filepath.Join(execPath, "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + base, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + base},
	})
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted-certificate case logs handshake errors
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return srv.URL + "/", ca
}

func TestNetworkTransports(t *testing.T) {
	base := t.TempDir()
	src := newWorkRepo(t, baseFiles())
	bare := filepath.Join(base, "tmpl.git")
	gitCmd(t, base, "clone", "-q", "--bare", src.dir, bare)
	push := func() string {
		src.write(map[string]string{"rootfs/etc/motd": time.Now().String()})
		c := src.commit("more")
		src.git("push", "-q", "--force", bare, "HEAD:refs/heads/main")
		return c
	}
	daemonURL, stopDaemon := gitDaemon(t, base)
	httpsURL, ca := httpsBackend(t, base)
	sshURL, keyPath := sshServer(t, base)

	tests := []struct {
		name string
		url  string
		cfg  Config
	}{
		{"git daemon", daemonURL + "tmpl.git", Config{}},
		{"https http-backend", httpsURL + "tmpl.git", Config{CABundle: ca}},
		{"ssh", sshURL + "/tmpl.git", Config{SSHKeyPath: keyPath}},
	}
	// A server whose host key is not the one in known_hosts is refused.
	wrongDir := t.TempDir()
	wrongKey := filepath.Join(wrongDir, "id_ed25519")
	data, _ := os.ReadFile(keyPath)
	os.WriteFile(wrongKey, data, 0o600)
	_, otherHost, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := ssh.NewSignerFromKey(otherHost)
	hostPort := strings.TrimPrefix(sshURL, "ssh://git@")
	host, port, _ := net.SplitHostPort(hostPort)
	os.WriteFile(filepath.Join(wrongDir, "known_hosts"),
		[]byte(fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(otherSigner.PublicKey()))), 0o600)
	wrong := newRegistry(t, Config{SSHKeyPath: wrongKey})
	if _, err := wrong.Add(t.Context(), "web", sshURL+"/tmpl.git", "main", nil); !errors.Is(err, ErrFetch) ||
		!strings.Contains(err.Error(), "key mismatch") {
		t.Errorf("Add with a mismatching known host key = %v", err)
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Validate = markerValidator(nil)
			r := newRegistry(t, tt.cfg)
			ctx := t.Context()
			var last Progress
			var sawTotal bool
			got, err := r.Add(ctx, "web", tt.url, "main", func(p Progress) {
				if p.Phase == PhaseFetching && p.TotalObjects > 0 {
					sawTotal = true
				}
				last = p
			})
			if err != nil {
				t.Fatalf("Add: %v", err)
			}
			want := gitCmd(t, bare, "rev-parse", "main")
			if got.Commit != want {
				t.Errorf("pinned %s, remote main is %s", got.Commit, want)
			}
			if !sawTotal || last.Phase != PhasePinning {
				t.Errorf("progress: saw object totals %t, last %+v", sawTotal, last)
			}
			c2 := push()
			if got, err := r.Update(ctx, "web", nil); err != nil || got.Commit != c2 {
				t.Errorf("Update = %+v, %v; want %s", got, err, c2)
			}
			if _, err := r.Add(ctx, "missing", tt.url, "no-such-branch", nil); !errors.Is(err, ErrNoSuchRef) {
				t.Errorf("Add(missing ref) = %v", err)
			}
			if left := cacheEntries(t, r); !slices.Equal(left, []string{"index:web", "repos/web.git"}) {
				t.Errorf("cache: %v", left)
			}
		})
	}

	// Without the server, the cache still serves Materialize; Update says
	// the fetch failed and keeps the pin.
	r := newRegistry(t, Config{})
	ctx := t.Context()
	added, err := r.Add(ctx, "web", daemonURL+"tmpl.git", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	stopDaemon()
	if _, err := r.Update(ctx, "web", nil); !errors.Is(err, ErrFetch) || !strings.Contains(err.Error(), "pin stays") {
		t.Errorf("Update with the daemon stopped = %v", err)
	}
	if err := r.Materialize(ctx, "web", "", "rootfs", filepath.Join(t.TempDir(), "rootfs"), nil); err != nil {
		t.Errorf("Materialize offline: %v", err)
	}
	if g, _ := r.Get("web"); g.Commit != added.Commit {
		t.Errorf("pin moved to %s", g.Commit)
	}
}

func TestFetchErrors(t *testing.T) {
	base := t.TempDir()
	src := newWorkRepo(t, baseFiles())
	gitCmd(t, base, "clone", "-q", "--bare", src.dir, filepath.Join(base, "tmpl.git"))
	gitCmd(t, base, "init", "-q", "--bare", filepath.Join(base, "empty.git"))
	daemonURL, _ := gitDaemon(t, base)
	httpsURL, _ := httpsBackend(t, base)
	closed := freePort(t)
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "id_ed25519")
	writeSSHKey(t, key)

	tests := []struct {
		name, url string
		cfg       Config
		is        error
		contains  string
	}{
		{"closed port", fmt.Sprintf("git://127.0.0.1:%d/tmpl.git", closed), Config{}, ErrFetch, "connection refused"},
		{"closed https port", fmt.Sprintf("https://127.0.0.1:%d/tmpl.git", closed), Config{}, ErrFetch, "connection refused"},
		{"missing repository", daemonURL + "nothing.git", Config{}, ErrFetch, "fetch " + daemonURL + "nothing.git"},
		{"empty repository", daemonURL + "empty.git", Config{}, ErrFetch, "the remote repository is empty"},
		{"empty local repository", filepath.Join(base, "empty.git"), Config{}, ErrFetch, "the remote repository is empty"},
		{"untrusted certificate", httpsURL + "tmpl.git", Config{}, ErrFetch, "certificate"},
		{"ssh without key", "ssh://git@127.0.0.1:1/x.git", Config{}, ErrFetch, "no SSH key configured"},
		{"ssh without known_hosts", "ssh://git@127.0.0.1:1/x.git", Config{SSHKeyPath: key}, ErrFetch, "known hosts file"},
		{"ssh missing key file", "git@127.0.0.1:x.git", Config{SSHKeyPath: filepath.Join(keyDir, "nope")}, ErrFetch, "SSH key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRegistry(t, tt.cfg)
			_, err := r.Add(t.Context(), "web", tt.url, "", nil)
			var fe *FetchError
			if !errors.Is(err, tt.is) || !errors.As(err, &fe) || fe.URL != tt.url || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("Add = %v, want %v containing %q", err, tt.is, tt.contains)
			}
			if left := cacheEntries(t, r); len(left) != 0 {
				t.Errorf("cache: %v", left)
			}
		})
	}
}

func TestFetchSizeLimit(t *testing.T) {
	random := make([]byte, 256<<10)
	rand.Read(random)
	files := baseFiles()
	files["rootfs/blob"] = string(random)
	src := newWorkRepo(t, files)
	r := newRegistry(t, Config{Limits: Limits{MaxFetchSize: 64 << 10}})
	_, err := r.Add(t.Context(), "web", src.dir, "", nil)
	if !errors.Is(err, ErrFetch) || !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "MaxFetchSize") {
		t.Fatalf("Add = %v", err)
	}
	if left := cacheEntries(t, r); len(left) != 0 {
		t.Errorf("cache: %v", left)
	}
}

func writeSSHKey(t *testing.T, path string) ssh.PublicKey {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	return signer.PublicKey()
}

// sshServer runs an SSH server on 127.0.0.1 that accepts one client key
// and runs git-upload-pack for exec requests under base. It writes the
// client key and a known_hosts for the server next to each other and
// returns the ssh:// URL prefix and the key path.
func sshServer(t *testing.T, base string) (string, string) {
	t.Helper()
	keyDir := t.TempDir()
	keyPath := filepath.Join(keyDir, "id_ed25519")
	clientPub := writeSSHKey(t, keyPath)
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(c ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) == string(clientPub.Marshal()) && c.User() == "git" {
			return nil, nil
		}
		return nil, errors.New("unknown key")
	}}
	cfg.AddHostKey(hostSigner)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	addr := l.Addr().String()
	port := l.Addr().(*net.TCPAddr).Port
	line := fmt.Sprintf("[127.0.0.1]:%d %s", port, ssh.MarshalAuthorizedKey(hostSigner.PublicKey()))
	os.WriteFile(filepath.Join(keyDir, "known_hosts"), []byte(line), 0o600)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveSSH(c, cfg, base)
		}
	}()
	return "ssh://git@" + addr, keyPath
}

func serveSSH(c net.Conn, cfg *ssh.ServerConfig, base string) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range creqs {
				if req.Type != "exec" {
					req.Reply(false, nil)
					continue
				}
				var payload struct{ Command string }
				ssh.Unmarshal(req.Payload, &payload)
				prog, arg, _ := strings.Cut(payload.Command, " ")
				arg = strings.Trim(arg, "'")
				if prog != "git-upload-pack" || strings.Contains(arg, "..") {
					req.Reply(false, nil)
					return
				}
				req.Reply(true, nil)
				cmd := exec.Command("git", "upload-pack", filepath.Join(base, arg))
				cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
				status := uint32(0)
				if err := cmd.Run(); err != nil {
					status = 1
				}
				ch.CloseWrite()
				var b [4]byte
				binary.BigEndian.PutUint32(b[:], status)
				ch.SendRequest("exit-status", false, b[:])
				return
			}
		}()
	}
}
