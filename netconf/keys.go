package netconf

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/curve25519"
)

// keyFileName is the WireGuard private key's file in the tenant's network directory.
const keyFileName = "wireguard.key"

// EnsureKey makes sure the tenant has a WireGuard private key, generating one (curve25519) on this host when it has
// none, and returns the public key in base64. The private key is only ever written to its file (mode 0600, in a
// 0700 directory, owned by Config.KeyOwner so systemd-networkd can read it); no function returns it.
func (m *Manager) EnsureKey(tenant string) (string, error) {
	if err := checkTenant(tenant); err != nil {
		return "", err
	}
	pub, err := m.PublicKey(tenant)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return pub, err
	}
	var priv [32]byte
	if _, err := rand.Read(priv[:]); err != nil {
		return "", err
	}
	// RFC 7748 clamping, as wg genkey does.
	priv[0] &= 248
	priv[31] = priv[31]&127 | 64
	// The tenant's directory must stay traversable for networkd; only the network directory is private.
	dir := m.networkDir(tenant)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("%w: %v", ErrWrite, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("%w: %v", ErrWrite, err)
	}
	if err := m.chown(dir); err != nil {
		return "", err
	}
	content := []byte(base64.StdEncoding.EncodeToString(priv[:]) + "\n")
	if err := writeAtomic(filepath.Join(dir, keyFileName), content, 0o600, m.chown); err != nil {
		return "", err
	}
	pubKey, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		return "", err
	}
	m.log.Info("generated WireGuard key", "tenant", tenant, "publicKey", base64.StdEncoding.EncodeToString(pubKey))
	return base64.StdEncoding.EncodeToString(pubKey), nil
}

// PublicKey returns the public key of the tenant's WireGuard private key; an error wrapping fs.ErrNotExist when the
// tenant has none.
func (m *Manager) PublicKey(tenant string) (string, error) {
	if err := checkTenant(tenant); err != nil {
		return "", err
	}
	path := filepath.Join(m.networkDir(tenant), keyFileName)
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrWrite, err)
	}
	priv, err := base64.StdEncoding.Strict().DecodeString(string(bytes.TrimSpace(raw)))
	if err != nil || len(priv) != 32 {
		return "", fmt.Errorf("%w: %s does not hold a base64 WireGuard key", ErrWrite, path)
	}
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrWrite, path, err)
	}
	return base64.StdEncoding.EncodeToString(pub), nil
}

func (m *Manager) chown(path string) error {
	if m.cfg.KeyOwner == nil {
		return nil
	}
	if err := os.Lchown(path, m.cfg.KeyOwner.UID, m.cfg.KeyOwner.GID); err != nil {
		return fmt.Errorf("%w: %v", ErrWrite, err)
	}
	return nil
}
