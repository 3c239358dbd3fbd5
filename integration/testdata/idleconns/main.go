// Command idleconns holds many idle connections to a Varlink unix socket, for the integration
// tests of bitbuilderd.
//
//	idleconns -n 1000 SOCKET
//
// It connects n times, sending nothing, and prints "connected N" once all are open. It then
// waits until its standard input ends, calls org.varlink.service.GetInfo once on every
// connection (proving the server kept each one), prints "answered N", closes them all and
// exits. It exits non-zero if it could not connect n times.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	n := flag.Int("n", 1000, "number of connections")
	timeout := flag.Duration("timeout", 10*time.Second, "limit for each connect and each reply")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: idleconns [-n N] [-timeout D] SOCKET")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *n, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(1)
	}
}

func run(socket string, n int, timeout time.Duration) error {
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for i := range n {
		c, err := net.DialTimeout("unix", socket, timeout)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i+1, err)
		}
		conns = append(conns, c)
	}
	fmt.Printf("connected %d in %v\n", len(conns), time.Since(start).Round(time.Millisecond))

	// Idle until told to go on.
	_, _ = io.Copy(io.Discard, os.Stdin)

	start = time.Now()
	var answered atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if getInfo(c, timeout) == nil {
				answered.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("answered %d in %v\n", answered.Load(), time.Since(start).Round(time.Millisecond))
	return nil
}

// getInfo calls org.varlink.service.GetInfo on c and checks that the reply names a vendor.
func getInfo(c net.Conn, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(`{"method":"org.varlink.service.GetInfo"}` + "\x00")); err != nil {
		return err
	}
	msg, err := bufio.NewReader(c).ReadBytes(0)
	if err != nil {
		return err
	}
	var reply struct {
		Parameters struct {
			Vendor string `json:"vendor"`
		} `json:"parameters"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(msg[:len(msg)-1], &reply); err != nil {
		return err
	}
	if reply.Error != "" || reply.Parameters.Vendor == "" {
		return fmt.Errorf("reply %s", msg)
	}
	return nil
}
