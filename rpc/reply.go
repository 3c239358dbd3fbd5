package rpc

import (
	"context"

	"github.com/varlink/go/varlink"
)

// WriteReply writes one reply made of parts (its encoding, the NUL included, in pieces) to a
// call's connection. On the server's own connections the parts are appended to the reply
// buffer directly, so a handler that streams thousands of replies from pre-encoded
// parameters allocates nothing per reply; on other connections they are joined and written.
func WriteReply(ctx context.Context, conn varlink.ReadWriterContext, parts ...[]byte) error {
	w, ok := conn.(*connWriter)
	if !ok {
		var msg []byte
		for _, p := range parts {
			msg = append(msg, p...)
		}
		_, err := conn.Write(ctx, msg)
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if len(w.buf)+n >= flushAt {
		if err := w.flush(); err != nil {
			return err
		}
		if n >= flushAt { // a large reply is written as it is, not copied
			for _, p := range parts {
				if err := w.write(p); err != nil {
					return err
				}
			}
			return nil
		}
	}
	for _, p := range parts {
		w.buf = append(w.buf, p...)
	}
	return nil
}
