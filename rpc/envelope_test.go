package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/varlink/go/varlink"
)

// oldEnvelope is what the server decoded a call with before parseCall: encoding/json into
// the envelope's fields, the parameters kept raw.
type oldEnvelope struct {
	Method     string          `json:"method"`
	Parameters json.RawMessage `json:"parameters"`
	More       bool            `json:"more"`
	Oneway     bool            `json:"oneway"`
	Upgrade    bool            `json:"upgrade"`
}

// testNames are method names parseCall is given as served.
var testNames = map[string]string{"a.b": "a.b", "io.bitbuilder.Tenant.Get": "io.bitbuilder.Tenant.Get"}

// sameVerdict reports how parseCall's verdict on msg differs from encoding/json's, or "".
func sameVerdict(msg []byte) string {
	var want oldEnvelope
	werr := json.Unmarshal(msg, &want)
	got, gerr := parseCall(msg, testNames)
	switch {
	case (werr == nil) != (gerr == nil):
		return fmt.Sprintf("parseCall error %v, encoding/json error %v", gerr, werr)
	case werr != nil:
		return ""
	case got.Method != want.Method || got.More != want.More || got.Oneway != want.Oneway || got.Upgrade != want.Upgrade:
		return fmt.Sprintf("parseCall %+v, encoding/json %+v", got, want)
	case (got.Params == nil) != (want.Parameters == nil) || !bytes.Equal(got.Params, want.Parameters):
		return fmt.Sprintf("parseCall parameters %q, encoding/json %q", got.Params, want.Parameters)
	}
	return ""
}

var envelopeCases = []string{
	`{"method":"a.b","parameters":{"x":1}}`,
	`{"parameters" : [1, {"a":"}"}] ,"method":"a.b"}`,
	`{"method":"a.b"}`,
	`{"method":"a.b","parameters":null}`,
	`{"method":"a.b","parameters":"x"}`,
	`{"method":"a.b","parameters":5}`,
	`{"method":"a.b","parameters":true}`,
	`{"method":"a.b","parameters":1e999}`,
	`{"method":"a.b","x":99999999999999999999999999999999e99999}`,
	`{"method":"a.b","more":1e999}`,
	`{"parameters":{"a":1},"PARAMETERS":{"b":2}}`,
	`{"parameters":{"a":1},"parameters":null}`,
	`{"p\u0061rameters":{"a":1}}`,
	"{\"parameter\u017f\":{\"a\":1}}", // long s folds to s, as in encoding/json
	`{"Method":"a.b","METHOD":"c.d"}`,
	`{"method":"a.b","method":null}`,
	`{"method":"a.b","more":true,"more":null}`,
	`{"method":"a.b","more":true,"more":false}`,
	`{"method":"io.bitbuilder.Tenant.G\u0065t"}`,
	`{"method":"a\u0000b"}`,
	`{"method":"\ud800.x"}`,
	"{\"method\":\"a.\xff\"}",
	"{\"method\":\"a.\x01\"}",
	`{"method":5}`,
	`{"method":["a.b"]}`,
	`{"more":"true"}`,
	`{"oneway":1}`,
	`{"upgrade":{}}`,
	`{"method":"a.b","oneway":true}`,
	`{"method":"a.b","upgrade":true}`,
	`{"method":"a.b","more":true,"oneway":true}`,
	`{"method":"a.b","more":true,"oneway":false,"upgrade":false}`,
	`{"unknown":{"deep":[1,2,{"x":null}]},"method":"a.b"}`,
	`{}`,
	` { } `,
	`null`,
	` null `,
	`nul`,
	`[]`,
	`"a.b"`,
	`5`,
	`true`,
	``,
	` `,
	`{`,
	`{"method":"a.b"`,
	`{"method":"a.b",}`,
	`{"method":"a.b"} x`,
	`{"method":"a.b"}{}`,
	`{"method" "a.b"}`,
	`{method:"a.b"}`,
	`{"method":"a.b" , "parameters":{"a":01}}`,
	`{"method":"a.b","parameters":{"a":-}}`,
	`{"method":"a.b","parameters":{"a":1.}}`,
	`{"method":"a.b","parameters":{"a":1e}}`,
	`{"method":"a.b","parameters":{"a":"\x"}}`,
	`{"method":"a.b","parameters":{"a":"\u12"}}`,
	`{"method":"a.b","parameters":{"a":tru}}`,
	`{"method":"a.b","parameters":{"a":[1,]}}`,
	"\xef\xbb\xbf{\"method\":\"a.b\"}",
	"{\"method\":\"a.b\"}\x00",
	"{\"method\":\"a.b\",\"parameters\":{\"a\":\"\t\"}}",
	"{\"method\":\"a.b\",\"parameters\":{\"a\":\"\xff\xfe\"}}",
	"{\r\n\t\"method\"\r\n:\t\"a.b\"\n}\n",
}

// TestParseCallAsEncodingJSON: parseCall accepts and refuses what encoding/json did, and
// finds the same method, flags and parameters: malformed JSON, repeated keys in any case,
// parameters of every type, huge numbers, escapes in method names and keys.
func TestParseCallAsEncodingJSON(t *testing.T) {
	cases := append([]string{}, envelopeCases...)
	// Nesting at encoding/json's limit (10000, the envelope included) and one beyond, with
	// the innermost container empty and not.
	for _, depth := range []int{maxNesting - 1, maxNesting} {
		for _, inner := range []string{"", "1"} {
			cases = append(cases, `{"parameters":`+strings.Repeat("[", depth)+inner+strings.Repeat("]", depth)+`}`)
			cases = append(cases, `{"x":`+strings.Repeat(`{"a":`, depth-1)+`{}`+strings.Repeat("}", depth-1)+`}`)
		}
	}
	cases = append(cases, strings.Repeat("[", maxNesting)+strings.Repeat("]", maxNesting))
	cases = append(cases, strings.Repeat("[", maxNesting+1)+strings.Repeat("]", maxNesting+1))
	for _, msg := range cases {
		if diff := sameVerdict([]byte(msg)); diff != "" {
			t.Errorf("%.80q: %s", msg, diff)
		}
	}
}

// FuzzParseCall: parseCall's verdict is encoding/json's on any message.
func FuzzParseCall(f *testing.F) {
	for _, s := range envelopeCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if diff := sameVerdict(msg); diff != "" {
			t.Errorf("%q: %s", msg, diff)
		}
	})
}

// raceBuild is set under the race detector (race_test.go).
var raceBuild bool

// TestParseCallAllocates: reading a call's envelope of a served method allocates nothing.
func TestParseCallAllocates(t *testing.T) {
	if raceBuild {
		t.Skip("the race detector's instrumentation allocates")
	}
	msg := []byte(`{"method":"io.bitbuilder.Tenant.Get","parameters":{"name":"` + strings.Repeat("a", 1000) + `"},"more":false}`)
	if n := testing.AllocsPerRun(10, func() {
		if _, err := parseCall(msg, testNames); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("parseCall: %v allocations, want none", n)
	}
}

// recordIface records the call its dispatch is given.
type recordIface struct{ seen *[]string }

func (recordIface) VarlinkGetName() string { return "org.example.record" }

func (recordIface) VarlinkGetDescription() string {
	return `interface org.example.record

# Records its call.
method Echo(a: ?int, b: ?string) -> ()
`
}

func (r recordIface) VarlinkDispatch(ctx context.Context, c varlink.Call, method string) error {
	var in struct {
		A *int64  `json:"a"`
		B *string `json:"b"`
	}
	err := c.GetParameters(&in)
	*r.seen = append(*r.seen, fmt.Sprintf("%s method=%q more=%v oneway=%v upgrade=%v params=%q decoded=%v,%v fds=%v",
		method, c.In.Method, c.WantsMore(), c.IsOneway(), c.WantsUpgrade(), *c.In.Parameters, deref(in.A), deref(in.B), c.RequestFDs()))
	if err != nil {
		return c.ReplyInvalidParameter(ctx, "parameters")
	}
	if c.WantsMore() {
		c.Continues = true
		if err := c.Reply(ctx, struct{}{}); err != nil {
			return err
		}
		c.Continues = false
	}
	return c.Reply(ctx, struct{}{})
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// bufConn collects what the library writes.
type bufConn struct{ bytes.Buffer }

func (b *bufConn) Write(_ context.Context, p []byte) (int, error) { return b.Buffer.Write(p) }
func (b *bufConn) Read(context.Context, []byte) (int, error)      { return 0, nil }
func (b *bufConn) ReadBytes(context.Context, byte) ([]byte, error) {
	return nil, nil
}

// TestDispatchAsTheLibrary: a checked call reaches the interface's dispatch as the library
// itself would pass it (method, flags, parameters, no file descriptors), and the replies
// are the same.
func TestDispatchAsTheLibrary(t *testing.T) {
	var viaServer, viaLibrary []string
	s, err := New(Config{Vendor: "t", Product: "t", Version: "1", URL: "https://example.org", AdminGroup: -1,
		Logger:     slog.New(slog.DiscardHandler),
		Interfaces: []Interface{{Dispatcher: recordIface{&viaServer}, Methods: map[string]Method{"Echo": {Access: Read}}}}})
	if err != nil {
		t.Fatal(err)
	}
	lib, err := varlink.NewService("t", "t", "1", "https://example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := lib.RegisterInterface(recordIface{&viaLibrary}); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{
		`{"method":"org.example.record.Echo","parameters":{"a":1,"b":"x"}}`,
		`{"method":"org.example.record.Echo","parameters":{ "b" : "y\u0041" } }`,
		`{"method":"org.example.record.Echo","parameters":{},"more":true}`,
		`{"method":"org.example.record.Echo","parameters":{"a":3},"oneway":true}`,
		`{"METHOD":"org.example.record.Echo","Parameters":{"a":1},"parameters":{"a":2}}`,
		`{"method":"org.example.record.Ech\u006f","parameters":{"b":null}}`,
	} {
		viaServer, viaLibrary = nil, nil
		w := &connWriter{}
		if err := s.handle(context.Background(), context.Background(), w, Peer{}, false, []byte(msg)); err != nil {
			t.Fatalf("%s: %v", msg, err)
		}
		var lw bufConn
		if err := lib.HandleMessage(context.Background(), &lw, []byte(msg)); err != nil {
			t.Fatalf("%s: library: %v", msg, err)
		}
		if fmt.Sprint(viaServer) != fmt.Sprint(viaLibrary) {
			t.Errorf("%s:\nserver dispatched  %q\nlibrary dispatched %q", msg, viaServer, viaLibrary)
		}
		if len(viaServer) != 1 {
			t.Errorf("%s: dispatched %d times", msg, len(viaServer))
		}
		if !bytes.Equal(w.buf, lw.Bytes()) {
			t.Errorf("%s: server replied %q, library %q", msg, w.buf, lw.Bytes())
		}
	}
	// Missing and null parameters are {} to the dispatch (the library alone refuses them).
	for _, msg := range []string{`{"method":"org.example.record.Echo"}`, `{"method":"org.example.record.Echo","parameters":null}`} {
		viaServer = nil
		w := &connWriter{}
		if err := s.handle(context.Background(), context.Background(), w, Peer{}, false, []byte(msg)); err != nil {
			t.Fatalf("%s: %v", msg, err)
		}
		if len(viaServer) != 1 || !strings.Contains(viaServer[0], `params="{}"`) || string(w.buf) != "{\"parameters\":{}}\x00" {
			t.Errorf("%s: dispatched %q, replied %q", msg, viaServer, w.buf)
		}
	}
}

// TestQuickCallsKeepOrder: Quick calls the reader serves itself and calls the call loop
// serves, pipelined on one connection, are answered in order (a Quick call behind a slow
// one waits for it), a oneway Quick call is not answered, and a malformed message after
// them still closes the connection once the calls before it are answered.
func TestQuickCallsKeepOrder(t *testing.T) {
	s := startServer(t, Config{})
	c := dialTest(t, s.socket)
	var msgs []string
	for _, m := range []string{
		`{"method":"org.example.limits.Echo","parameters":{"n":1}}`,
		`{"method":"org.example.limits.Sleep","parameters":{"ms":50}}`,
		`{"method":"org.example.limits.Echo","parameters":{"n":2}}`,
		`{"method":"org.example.limits.Echo","parameters":{"n":3},"oneway":true}`,
		`{"method":"org.example.limits.Get","parameters":{}}`,
		`{"method":"org.example.limits.Echo","parameters":{"n":"four"}}`,
		`{"method":"org.example.limits.Echo","parameters":{"n":5}}`,
	} {
		msgs = append(msgs, m+"\x00")
	}
	before := s.servedHere.Load()
	if _, err := c.conn.Write([]byte(strings.Join(msgs, "") + `{"method":` + "\x00")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		r, err := c.read(10 * time.Second)
		if err != nil {
			break
		}
		got = append(got, fmt.Sprintf("%s%v", r.Error, r.Parameters))
	}
	want := []string{"map[n:1]", "map[ok:true]", "map[n:2]", "map[ok:true]",
		"org.varlink.service.InvalidParametermap[parameter:n]", "map[n:5]"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("replies %q, want %q", got, want)
	}
	if s.servedHere.Load() == before {
		t.Error("no Quick call was served by the reader")
	}

	// One at a time, every Quick call is the reader's.
	before = s.servedHere.Load()
	c = dialTest(t, s.socket)
	for i := range 10 {
		if r := c.mustCall("org.example.limits.Echo", fmt.Sprintf(`{"n":%d}`, i)); r.Parameters["n"] != float64(i) {
			t.Fatalf("Echo %d: %v", i, r)
		}
	}
	if n := s.servedHere.Load() - before; n != 10 {
		t.Errorf("the reader served %d of 10 Quick calls made one at a time", n)
	}
}
