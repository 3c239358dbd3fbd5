package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "BITBUILDER_STORE_CRASH_CHILD"

// crashValue is the value the crash child writes for a record: derived from
// its name so the parent can check it is intact, of varying size so that
// some records span pages.
func crashValue(name string, size int) []byte {
	return bytes.Repeat([]byte(name+";"), 1+size/(len(name)+1))[:size]
}

// TestCrashRecovery SIGKILLs a child process that commits from many
// goroutines at random moments, then checks that every commit the child saw
// acknowledged survived intact and that the file passes Check. The child
// also makes deferred writes (Defer) of counters and watches them: a value a
// watcher saw must have survived too (a deferred write is visible only once
// it is durable).
func TestCrashRecovery(t *testing.T) {
	if spec := os.Getenv(crashChildEnv); spec != "" {
		runCrashChild(spec)
		return
	}
	rounds, maxLife := 12, 1500*time.Millisecond
	if testing.Short() {
		rounds, maxLife = 3, 600*time.Millisecond
	}
	path := dbPath(t)
	acked := map[string]uint64{}    // record name -> revision acknowledged
	counters := map[string]uint64{} // counter record -> highest acknowledged value
	for round := range rounds {
		lines := crashRound(t, path, round, time.Duration(100+rand.IntN(int(maxLife/time.Millisecond)))*time.Millisecond)
		n := 0
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) != 4 || f[0] != "ACK" {
				continue
			}
			v, err := strconv.ParseUint(f[3], 10, 64)
			if err != nil {
				t.Fatalf("bad line %q", l)
			}
			switch f[1] {
			case "rec":
				acked[f[2]] = v
			case "cnt", "st":
				counters[f[1]+"/"+f[2]] = max(counters[f[1]+"/"+f[2]], v)
			}
			n++
		}
		if err := Check(path); err != nil {
			t.Fatalf("round %d: Check after SIGKILL: %v", round, err)
		}
		verifyCrash(t, path, round, acked, counters)
		t.Logf("round %d: %d acknowledgements, %d records acknowledged in total", round, n, len(acked))
	}
	if len(acked) == 0 {
		t.Fatal("the child acknowledged nothing")
	}
	seen := 0
	for key := range counters {
		if strings.HasPrefix(key, "st/") {
			seen++
		}
	}
	if seen == 0 {
		t.Fatal("the child's watcher saw no deferred write")
	}
}

// crashRound runs the child for life, kills it and returns the complete
// lines it printed.
func crashRound(t *testing.T, path string, round int, life time.Duration) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashRecovery$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%s", crashChildEnv, round, path))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		lines []string
		done  = make(chan struct{})
		ready = make(chan struct{})
	)
	go func() {
		defer close(done)
		r := bufio.NewReader(out)
		first := true
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				break // a line cut by the kill has no newline and is dropped
			}
			if first {
				close(ready)
				first = false
			}
			lines = append(lines, strings.TrimSuffix(l, "\n"))
		}
		if first {
			close(ready)
		}
	}()
	select { // let it run for life after its first acknowledgement
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Error("child printed nothing in 20s")
	}
	time.Sleep(life)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v", err)
	}
	return lines
}

func verifyCrash(t *testing.T, path string, round int, acked, counters map[string]uint64) {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("round %d: reopen: %v", round, err)
	}
	defer s.Close()
	ctx := t.Context()
	for name, rev := range acked {
		r, err := s.Get(ctx, "rec", name)
		if err != nil {
			t.Fatalf("round %d: acknowledged record %s (revision %d): %v", round, name, rev, err)
		}
		size, _ := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
		if r.ModRevision != rev || r.CreateRevision != rev || !bytes.Equal(r.Value, crashValue(name, size)) {
			t.Fatalf("round %d: record %s: revisions %d/%d (want %d), value intact %v",
				round, name, r.CreateRevision, r.ModRevision, rev, bytes.Equal(r.Value, crashValue(name, size)))
		}
		if rev > s.Revision() {
			t.Fatalf("round %d: record revision %d beyond store revision %d", round, rev, s.Revision())
		}
	}
	for key, v := range counters {
		kind, name, _ := strings.Cut(key, "/")
		r, err := s.Get(ctx, kind, name)
		if err != nil {
			t.Fatalf("round %d: counter %s: %v", round, key, err)
		}
		got, _ := strconv.ParseUint(string(r.Value), 10, 64)
		if got < v {
			t.Fatalf("round %d: counter %s is %d, acknowledged (or seen by Watch) %d", round, key, got, v)
		}
	}
}

// runCrashChild commits until it is killed. spec is "round:path".
func runCrashChild(spec string) {
	roundStr, path, _ := strings.Cut(spec, ":")
	round, _ := strconv.Atoi(roundStr)
	s, err := Open(path, Options{Timeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	ack := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		mu.Lock()
		os.Stdout.WriteString(line) // one write per line
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	// Deferred writes of counters, and a watcher that reports each value it sees.
	watch, err := s.Watch(ctx, "st", s.Revision())
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child: watch:", err)
		os.Exit(3)
	}
	wg.Go(func() {
		for ev := range watch {
			ack("ACK st %s %s\n", ev.Name, ev.Value)
		}
	})
	for g := range 4 {
		wg.Go(func() {
			name := fmt.Sprintf("r%d-d%d", round, g)
			for i := 1; ctx.Err() == nil; i++ {
				v := []byte(strconv.Itoa(i))
				if err := s.Defer("st", name, func([]byte, uint64) ([]byte, error) { return v, nil }); err != nil {
					fmt.Fprintln(os.Stderr, "crash child: defer:", err)
					os.Exit(3)
				}
				time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
			}
		})
	}
	for g := range 16 {
		wg.Go(func() {
			cnt := fmt.Sprintf("r%d-g%d", round, g)
			for i := 0; ctx.Err() == nil; i++ {
				size := rand.IntN(1500)
				if i%10 == 9 {
					size = 5000 + rand.IntN(8000) // spans several pages
				}
				name := fmt.Sprintf("r%d-g%d-%d-%d", round, g, i, size)
				ops := []Op{{Type: OpCreate, Kind: "rec", Name: name, Value: crashValue(name, size)}}
				if i%3 == 0 {
					ops = append(ops, Op{Type: OpPut, Kind: "cnt", Name: cnt, Value: []byte(strconv.Itoa(i))})
				}
				rev, err := s.Commit(ctx, ops...)
				if err != nil {
					fmt.Fprintln(os.Stderr, "crash child: commit:", err)
					os.Exit(3)
				}
				ack("ACK rec %s %d\n", name, rev)
				if i%3 == 0 {
					ack("ACK cnt %s %d\n", cnt, i)
				}
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}
