// Command varlinkhello is built by testhost's tests with GoBuild and run inside a test host: it prints the
// hostname and the machine names io.systemd.Machine.List returns over machined's Varlink socket.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "varlinkhello:", err)
		os.Exit(1)
	}
}

func run() error {
	host, err := os.Hostname()
	if err != nil {
		return err
	}
	fmt.Println("host", host)
	conn, err := net.Dial("unix", "/run/systemd/machine/io.systemd.Machine")
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(`{"method":"io.systemd.Machine.List","parameters":{},"more":true}` + "\x00")); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	for {
		msg, err := r.ReadBytes(0)
		if err != nil {
			return err
		}
		var reply struct {
			Parameters struct {
				Name string `json:"name"`
			} `json:"parameters"`
			Continues bool   `json:"continues"`
			Error     string `json:"error"`
		}
		if err := json.Unmarshal(msg[:len(msg)-1], &reply); err != nil {
			return err
		}
		if reply.Error != "" {
			return fmt.Errorf("varlink error %s", reply.Error)
		}
		fmt.Println("machine", reply.Parameters.Name)
		if !reply.Continues {
			return nil
		}
	}
}
