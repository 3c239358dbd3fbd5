package validate

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// testCert makes an OpenPGP certificate (v4, or v6 when v6 is set) and returns its fingerprint, its armored
// public certificate and its armored secret key.
func testCert(t *testing.T, v6 bool) (fpr, public, secret string) {
	t.Helper()
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, V6Keys: v6}
	if v6 {
		cfg.Algorithm = packet.PubKeyAlgoEd25519
	}
	e, err := openpgp.NewEntity("BitBuilder Test", "", "test@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	arm := func(typ string, write func(*bytes.Buffer) error) string {
		var raw, out bytes.Buffer
		if err := write(&raw); err != nil {
			t.Fatal(err)
		}
		w, err := armor.Encode(&out, typ, nil)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw.Bytes())
		w.Close()
		return out.String() + "\n"
	}
	public = arm("PGP PUBLIC KEY BLOCK", func(b *bytes.Buffer) error { return e.Serialize(b) })
	secret = arm("PGP PRIVATE KEY BLOCK", func(b *bytes.Buffer) error { return e.SerializePrivate(b, nil) })
	return hex.EncodeToString(e.PrimaryKey.Fingerprint), public, secret
}

func TestVOA(t *testing.T) {
	fpr4, pub4, sec4 := testCert(t, false)
	fpr6, pub6, _ := testCert(t, true)
	other, pubOther, _ := testCert(t, false)
	if len(fpr4) != 40 || len(fpr6) != 64 {
		t.Fatalf("fingerprint lengths %d, %d", len(fpr4), len(fpr6))
	}
	base := "usr/share/voa/arch/package/default/openpgp/"
	good := []node{
		file(base+fpr4+".openpgp", pub4),
		file("etc/voa/arch:::cashier-system:1.0.0/trust-anchor-image/default/openpgp/"+fpr6+".openpgp", pub6),
		file("usr/share/voa/debian:13/repository-metadata/main/openpgp/"+other+".openpgp", pubOther),
		link("etc/voa/arch/package/default/openpgp/"+other+".openpgp", "/dev/null"),
		link("usr/local/share/voa/arch/package/default/openpgp/"+fpr4+".openpgp", "../../../../../../../share/voa/arch/package/default/openpgp/"+fpr4+".openpgp"),
	}
	tests := []struct {
		name string
		add  []node
		rule string
		sev  Severity
	}{
		{"E40 misplaced load path", []node{dir("usr/lib/voa", 0o755)}, "E40", SeverityError},
		{"E40 run/voa in an image", []node{file("run/voa/arch/package/default/openpgp/"+fpr4+".openpgp", pub4)}, "E40", SeverityWarning},
		{"E41 file at the os level", []node{file("usr/share/voa/README", "")}, "E41", SeverityError},
		{"E41 directory below technology", []node{dir(base+"sub", 0o755)}, "E41", SeverityError},
		{"E42 uppercase os", []node{dir("usr/share/voa/Arch/package/default/openpgp", 0o755)}, "E42", SeverityError},
		{"E42 trailing colon", []node{dir("usr/share/voa/arch:/package/default/openpgp", 0o755)}, "E42", SeverityError},
		{"E42 no ID", []node{dir("usr/share/voa/:1/package/default/openpgp", 0o755)}, "E42", SeverityError},
		{"E42 six parts", []node{dir("usr/share/voa/a:b:c:d:e:f/package/default/openpgp", 0o755)}, "E42", SeverityWarning},
		{"E43 bad purpose", []node{dir("usr/share/voa/arch/Package/default/openpgp", 0o755)}, "E43", SeverityError},
		{"E43 double trust anchor", []node{dir("usr/share/voa/arch/trust-anchor-trust-anchor-image/default/openpgp", 0o755)}, "E43", SeverityError},
		{"E44 bad context", []node{dir("usr/share/voa/arch/package/Default/openpgp", 0o755)}, "E44", SeverityError},
		{"E45 bad technology", []node{dir("usr/share/voa/arch/package/default/Open PGP", 0o755)}, "E45", SeverityError},
		{"E45 unknown technology", []node{dir("usr/share/voa/arch/package/default/gpgsm", 0o755)}, "E45", SeverityWarning},
		{"E46 name is not the fingerprint", []node{file(base+other+".openpgp", pub4)}, "E46", SeverityError},
		{"E46 uppercase name", []node{file(base+"ABCD.openpgp", pub4)}, "E46", SeverityError},
		{"E46 not armored", []node{file(base+fpr4+".openpgp", "binary")}, "E46", SeverityError},
		{"E46 two certificates", []node{file(base+fpr4+".openpgp", pub4+pubOther)}, "E46", SeverityError},
		{"E46 secret key", []node{file(base+fpr4+".openpgp", sec4)}, "E46", SeverityError},
		{"E47 absolute link", []node{link("usr/local/share/voa/arch/package/default/openpgp/x.openpgp", "/usr/share/voa/arch/package/default/openpgp/"+fpr4+".openpgp")}, "E47", SeverityWarning},
		{"E47 dangling link", []node{link(base+"y.openpgp", "nothing.openpgp")}, "E47", SeverityWarning},
		{"E47 link to higher priority", []node{link(base+fpr6+".openpgp", "../../../../../../../etc/voa/arch:::cashier-system:1.0.0/trust-anchor-image/default/openpgp/"+fpr6+".openpgp")}, "E47", SeverityWarning},
		{"E47 renaming link", []node{link(base+other+".openpgp", fpr4+".openpgp")}, "E47", SeverityWarning},
		{"E47 escaping link", []node{file("etc/keys/k.openpgp", pub4), link(base+"k.openpgp", "../../../../../../../etc/keys/k.openpgp")}, "E47", SeverityWarning},
		{"E47 type-changing link", []node{file("usr/share/voa/arch/package/default/ssh/ctx", "key"), link("usr/share/voa/arch/image/ctx", "../package/default/ssh/ctx")}, "E47", SeverityWarning},
		{"E48 masking in usr", []node{link(base+"m.openpgp", "/dev/null")}, "E48", SeverityWarning},
		{"E48 masked directory", []node{link("etc/voa/arch/repository-metadata", "/dev/null")}, "E48", SeverityWarning},
	}
	t.Run("good", func(t *testing.T) {
		dir := t.TempDir()
		build(t, dir, good...)
		rep, err := VOA(t.Context(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Findings) != 0 {
			t.Fatalf("findings:\n%s", dump(rep))
		}
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			build(t, dir, good...)
			build(t, dir, tc.add...)
			rep, err := VOA(t.Context(), dir)
			if err != nil {
				t.Fatal(err)
			}
			checkFindings(t, rep, tc.rule, tc.sev)
		})
	}
}
