// Command hostile opens many hostile connections to a Varlink socket and holds them until
// its stdin closes. Tests of package rpc and of the daemon build it and run it as another
// uid (SO_PEERCRED is what the server goes by, so the clients must be another process).
//
//	hostile -socket PATH -n N -kinds idle,partial,flood,call [-size BYTES]
//
// Connection i is of kind kinds[i % len(kinds)]:
//
//	idle     connects and sends nothing
//	partial  sends the start of a call and never its end
//	flood    sends -size bytes of one call without its NUL terminator, as fast as the
//	         server reads them
//	call     sends complete calls of -size bytes (a Tenant.Get with an unknown field that
//	         holds an array of small numbers: cheap to send, costly to decode) and reads
//	         the replies, again and again
//	name     sends complete calls of -size bytes that pass the parameter check (a
//	         Tenant.Get of a name of that size, which the error reply repeats) and never
//	         reads a reply
//	info     not hostile: calls org.varlink.service.GetInfo and reads the reply, again and
//	         again, counting the replies
//
// When all connects were tried it prints "ready N" (N connects succeeded). Errors after
// that are expected (the server closes what a limit refuses) and ignored. When stdin
// closes it prints "answered N", the replies the info connections got, and exits.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

func main() {
	socket := flag.String("socket", "", "socket path")
	n := flag.Int("n", 1, "connections")
	kinds := flag.String("kinds", "idle", "comma-separated kinds, used in turn")
	size := flag.Int("size", 8<<20, "bytes of a flood or of a call")
	flag.Parse()

	ks := strings.Split(*kinds, ",")
	flood := append([]byte(`{"method":"io.bitbuilder.Tenant.Get","parameters":{"name":"`), bytes.Repeat([]byte("x"), *size)...)
	flood = flood[:max(*size, 1)]
	call := []byte(`{"method":"io.bitbuilder.Tenant.Get","parameters":{"name":"a","x":[`)
	for len(call) < *size-8 {
		call = append(call, "1,"...)
	}
	call = append(call, "1]}}\x00"...)
	name := append([]byte(`{"method":"io.bitbuilder.Tenant.Get","parameters":{"name":"`), bytes.Repeat([]byte("x"), max(*size-70, 1))...)
	name = append(name, "\"}}\x00"...)

	var conns []net.Conn
	var answered atomic.Int64
	for i := range *n {
		var c net.Conn
		var err error
		for try := 0; try < 200; try++ { // the accept queue may be full for a moment
			if c, err = net.Dial("unix", *socket); err == nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			continue
		}
		conns = append(conns, c)
		switch ks[i%len(ks)] {
		case "idle":
		case "partial":
			c.Write([]byte(`{"method":"org.varlink.service.GetInfo","parameters":{`))
		case "flood":
			go c.Write(flood)
		case "call":
			go func() {
				r := bufio.NewReader(c)
				for {
					if _, err := c.Write(call); err != nil {
						return
					}
					if _, err := r.ReadBytes(0); err != nil {
						return
					}
				}
			}()
		case "info":
			go func() {
				r := bufio.NewReader(c)
				for {
					if _, err := c.Write([]byte(`{"method":"org.varlink.service.GetInfo"}` + "\x00")); err != nil {
						return
					}
					b, err := r.ReadBytes(0)
					if err != nil {
						return
					}
					if bytes.Contains(b, []byte(`"vendor"`)) {
						answered.Add(1)
					}
				}
			}()
		case "name":
			go func() {
				for {
					if _, err := c.Write(name); err != nil {
						return
					}
				}
			}()
		default:
			fmt.Fprintln(os.Stderr, "unknown kind", ks[i%len(ks)])
			os.Exit(2)
		}
	}
	fmt.Printf("ready %d\n", len(conns))
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("answered %d\n", answered.Load())
}
