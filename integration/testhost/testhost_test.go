package testhost

import (
	"strings"
	"testing"
)

func TestBootRunWriteRead(t *testing.T) {
	h := Start(t, Options{Name: "smoke"})
	ctx := t.Context()
	out, _, err := h.Run(ctx, "systemctl", "is-system-running")
	state := strings.TrimSpace(string(out))
	if state != "running" && state != "degraded" {
		t.Fatalf("is-system-running = %q, %v", state, err)
	}
	if err := h.WriteFile("/etc/bbtest/hello", []byte("hi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := h.Shell(ctx, "stat -c %a /etc/bbtest/hello; cat /etc/bbtest/hello")
	if err != nil || string(got) != "600\nhi\n" {
		t.Fatalf("inside: %q, %v", got, err)
	}
	back, err := h.ReadFile("/etc/bbtest/hello")
	if err != nil || string(back) != "hi\n" {
		t.Fatalf("ReadFile = %q, %v", back, err)
	}
}
