package netns

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"

	"golang.org/x/sys/unix"
)

// The isolation filter is a classic BPF program run by cls_bpf in direct-action mode on the ingress of a tenant's
// bridge (ingress qdisc). It sees every frame the bridge passes up to the host's IP stack, whether for local
// delivery (weak host model: any local address answers) or for forwarding, and none of the frames bridged between
// the tenant's own ports. See the package documentation for why this mechanism.
const (
	filterPriority = 1
	filterHandle   = 0xb1b

	tcActOK   = 0 // TC_ACT_OK
	tcActShot = 2 // TC_ACT_SHOT

	ethTypeOffset = 12      // EtherType in the Ethernet header
	ipDstOffset   = 14 + 16 // IPv4 destination address
)

type sockFilter struct {
	code   uint16
	jt, jf uint8
	k      uint32
}

// program returns the filter's instructions: pass what is not IPv4, pass a destination in Own, drop a destination
// in Base, pass the rest (the tenant's traffic to the outside world).
func (f Filter) program() []sockFilter {
	mask := func(bits int) uint32 { return ^uint32(0) << (32 - bits) }
	addr := func(a [4]byte) uint32 { return binary.BigEndian.Uint32(a[:]) }
	return []sockFilter{
		/* 0 */ {unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, 0, 0, ethTypeOffset},
		/* 1 */ {unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, 0, 6, unix.ETH_P_IP}, // not IPv4: 8
		/* 2 */ {unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, 0, 0, ipDstOffset},
		/* 3 */ {unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, 0, 0, mask(f.Own.Bits())},
		/* 4 */ {unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, 3, 0, addr(f.Own.Addr().As4())}, // own: 8
		/* 5 */ {unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, 0, 0, ipDstOffset},
		/* 6 */ {unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, 0, 0, mask(f.Base.Bits())},
		/* 7 */ {unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, 1, 0, addr(f.Base.Addr().As4())}, // base: 9
		/* 8 */ {unix.BPF_RET | unix.BPF_K, 0, 0, tcActOK},
		/* 9 */ {unix.BPF_RET | unix.BPF_K, 0, 0, tcActShot},
	}
}

// bytes encodes the program as struct sock_filter[] in host byte order, as TCA_BPF_OPS wants it.
func (f Filter) bytes() []byte {
	var out []byte
	for _, in := range f.program() {
		out = binary.NativeEndian.AppendUint16(out, in.code)
		out = append(out, in.jt, in.jf)
		out = binary.NativeEndian.AppendUint32(out, in.k)
	}
	return out
}

// classID is stored in the filter's TCA_BPF_CLASSID (unused by a direct-action filter on ingress) so that the
// installed program can be recognised when the filters are listed.
func (f Filter) classID() uint32 {
	h := fnv.New32a()
	h.Write(f.bytes())
	return h.Sum32()
}

// Fingerprint identifies the program; Observed.Filter holds the fingerprint of the installed one.
func (f Filter) Fingerprint() string { return fmt.Sprintf("%08x", f.classID()) }
