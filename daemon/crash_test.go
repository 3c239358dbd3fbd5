package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bitbuilder/bitbuilder/internal/testpolicy"
	"github.com/bitbuilder/bitbuilder/store"
)

// In crash-child mode the test binary is a bare daemon that the parent kills with SIGKILL.
func init() {
	state := os.Getenv("BB_CRASH_STATE")
	if state == "" {
		return
	}
	err := Run(context.Background(), Config{
		SocketPath: os.Getenv("BB_CRASH_SOCKET"),
		StateDir:   state,
		AdminGroup: "0",
		IndexMin:   1,
		IndexMax:   60000,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestCrashLosesNothingAcknowledged kills the daemon with SIGKILL at random moments while
// clients create tenants concurrently. After every restart each tenant whose Create was
// acknowledged must be there, intact, and the database must pass bbolt's consistency check.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	testpolicy.Short(t, "crash test is not short")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	sock := filepath.Join(dir, "sock")
	acked := map[string]int{} // name -> network index acknowledged
	var mu sync.Mutex
	rounds := 8
	for round := range rounds {
		cmd := exec.Command(self, "-test.run=^$")
		cmd.Env = append(os.Environ(), "BB_CRASH_STATE="+state, "BB_CRASH_SOCKET="+sock)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			c, err := net.Dial("unix", sock)
			if err == nil {
				c.Close()
			}
			return err == nil
		}, "the daemon's socket")

		verify(t, sock, acked, round)

		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := net.Dial("unix", sock)
				if err != nil {
					return
				}
				defer conn.Close()
				r := bufio.NewReader(conn)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					name := fmt.Sprintf("r%d-g%d-%d", round, g, i)
					if _, err := conn.Write([]byte(`{"method":"io.bitbuilder.Tenant.Create","parameters":{"name":"` + name + `"}}` + "\x00")); err != nil {
						return
					}
					b, err := r.ReadBytes(0)
					if err != nil {
						return // killed before the reply: not acknowledged
					}
					var rep struct {
						Parameters struct {
							Tenant struct {
								NetworkIndex int `json:"networkIndex"`
							} `json:"tenant"`
						} `json:"parameters"`
						Error string `json:"error"`
					}
					if json.Unmarshal(b[:len(b)-1], &rep) == nil && rep.Error == "" {
						mu.Lock()
						acked[name] = rep.Parameters.Tenant.NetworkIndex
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(50+rand.IntN(400)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		close(stop)
		wg.Wait()
		if err := store.Check(filepath.Join(state, "bitbuilder.db")); err != nil {
			t.Fatalf("database check after crash %d: %v", round+1, err)
		}
		// The killed daemon leaves its socket file; the next one must cope with it.
	}
	if err := store.Check(filepath.Join(state, "bitbuilder.db")); err != nil {
		t.Fatalf("database check after %d crashes: %v", rounds, err)
	}
	d := startDaemonIn(t, t.TempDir(), state)
	verify(t, d.socket, acked, rounds)
	// Statuses are not made durable before any reply: those a crash lost are written again by
	// the first reconcile pass after the start, so every tenant leaves pending.
	c := dial(t, d.socket)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		ready := map[string]bool{}
		for _, r := range c.callMore("io.bitbuilder.Tenant.List", `{}`) {
			tn := r.Parameters["tenant"].(map[string]any)
			ready[tn["name"].(string)] = tn["phase"] == "ready"
		}
		missing := 0
		for name := range acked {
			if !ready[name] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged tenants have no status a minute after the restart", missing)
		}
	}
	t.Logf("%d acknowledged creates survived %d SIGKILLs", len(acked), rounds)
	if len(acked) < rounds {
		t.Errorf("only %d creates were acknowledged in %d rounds: the test did not exercise much", len(acked), rounds)
	}
}

func verify(t *testing.T, sock string, acked map[string]int, round int) {
	t.Helper()
	c := dial(t, sock)
	for name, idx := range acked {
		r := c.call("io.bitbuilder.Tenant.Get", `{"name":"`+name+`"}`)
		if r.Error != "" {
			t.Fatalf("round %d: acknowledged tenant %s lost: %s", round, name, r.Error)
		}
		tn := r.Parameters["tenant"].(map[string]any)
		if int(tn["networkIndex"].(float64)) != idx || tn["name"] != name {
			t.Fatalf("round %d: tenant %s changed: %v (acknowledged index %d)", round, name, tn, idx)
		}
	}
}
