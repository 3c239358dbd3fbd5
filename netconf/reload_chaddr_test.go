package netconf

import (
	"net"
	"testing"
)

func TestTrimChaddr(t *testing.T) {
	mac := []byte{0x3e, 0x05, 0, 0xdc, 0xa6, 0x98}
	padded := append(append([]byte{}, mac...), make([]byte, 10)...)
	if got := net.HardwareAddr(trimChaddr(padded)).String(); got != "3e:05:00:dc:a6:98" {
		t.Errorf("padded chaddr: %s", got)
	}
	odd := append(append([]byte{}, mac...), 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	if len(trimChaddr(odd)) != 16 {
		t.Errorf("a chaddr with data past 6 bytes was cut")
	}
}
