package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSFiles are PEM files for TLS tests, made with crypto/x509 in a
// temporary directory: a CA, a server certificate it signs for 127.0.0.1 and
// localhost, a client certificate it signs, and an unrelated CA that signed
// none of them (to see verification fail).
type TLSFiles struct {
	CAFile, ServerCertFile, ServerKeyFile, ClientCertFile, ClientKeyFile string
	OtherCAFile                                                          string
}

// NewTLSFiles writes a fresh set of TLSFiles, removed when the test ends.
func NewTLSFiles(tb testing.TB) TLSFiles {
	tb.Helper()
	dir := tb.TempDir()
	f := TLSFiles{
		CAFile:         filepath.Join(dir, "ca.pem"),
		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
		OtherCAFile:    filepath.Join(dir, "other-ca.pem"),
	}
	ca, caKey, err := newCert(tb, "enrollq test CA", nil, nil, f.CAFile, "")
	if err == nil {
		_, _, err = newCert(tb, "127.0.0.1", ca, caKey, f.ServerCertFile, f.ServerKeyFile)
	}
	if err == nil {
		_, _, err = newCert(tb, "enrollq test client", ca, caKey, f.ClientCertFile, f.ClientKeyFile)
	}
	if err == nil {
		_, _, err = newCert(tb, "enrollq unrelated CA", nil, nil, f.OtherCAFile, "")
	}
	if err != nil {
		tb.Fatalf("making TLS test certificates: %v", err)
	}
	return f
}

// newCert makes a certificate named cn, signed by parent (a self-signed CA
// when parent is nil), and writes it to certFile and its key to keyFile
// (unless empty).
func newCert(tb testing.TB, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage, tmpl.IPAddresses, tmpl.DNSNames = nil, nil, nil
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, nil, err
	}
	if keyFile != "" {
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
			return nil, nil, err
		}
	}
	return cert, key, nil
}

// TLSServer is a private redis-server child that speaks TLS on TLSAddr and
// asks clients for a certificate signed by Files.CAFile (tls-auth-clients
// yes). It also answers plain TCP on Addr, for tests to check what a TLS
// client really wrote.
type TLSServer struct {
	Addr, TLSAddr string
	Files         TLSFiles
}

// StartTLSServer starts a TLSServer with fresh TLSFiles and extra
// redis-server arguments; it is stopped when the test ends.
func StartTLSServer(tb testing.TB, extra ...string) TLSServer {
	tb.Helper()
	files := NewTLSFiles(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	args := append([]string{"--tls-port", fmt.Sprint(port),
		"--tls-cert-file", files.ServerCertFile, "--tls-key-file", files.ServerKeyFile,
		"--tls-ca-cert-file", files.CAFile, "--tls-auth-clients", "yes"}, extra...)
	addr, stop, err := StartServer("", args...)
	if err != nil {
		tb.Fatalf("starting a TLS redis-server: %v", err)
	}
	tb.Cleanup(stop)
	return TLSServer{Addr: addr, TLSAddr: fmt.Sprintf("127.0.0.1:%d", port), Files: files}
}
