package rpc

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestWriteReply: replies written in parts arrive whole and in order, small ones buffered
// until the call's flush, one larger than the buffer written as it is, after what was
// buffered before it.
func TestWriteReply(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	w := &connWriter{conn: a, timeout: 5 * time.Second}
	large := bytes.Repeat([]byte("x"), flushAt+100)
	replies := [][][]byte{
		{[]byte(`{"parameters":`), []byte(`{"n":1}`), []byte(`,"continues":true}` + "\x00")},
		{[]byte(`{"parameters":`), []byte(`{"s":"`), large, []byte(`"}`), []byte(`,"continues":true}` + "\x00")},
		{[]byte(`{"parameters":`), []byte(`{"n":3}`), []byte("}\x00")},
	}
	var want []byte
	for _, r := range replies {
		want = append(want, bytes.Join(r, nil)...)
	}
	got := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(b)
		got <- data
	}()
	for _, r := range replies {
		if err := WriteReply(context.Background(), w, r...); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.buf) == 0 {
		t.Error("the small reply after the large one was not buffered")
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if data := <-got; !bytes.Equal(data, want) {
		t.Fatalf("read %d bytes, want %d (first difference at %d)", len(data), len(want), firstDiff(data, want))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WriteReply(ctx, w, []byte("{}\x00")); err == nil {
		t.Error("WriteReply with a cancelled context succeeded")
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
