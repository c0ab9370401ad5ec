package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the certificate material of one cluster, written as PEM files in its
// directory. Everything is generated per cluster and lives as long as the test.
type pki struct {
	caCert, caKey        string // signs serving and client certificates
	servingCert, servKey string // kube-apiserver's serving certificate
	saKey                string // service-account token signing key (RSA, PKCS#1)
	caPEM                []byte

	ca     *x509.Certificate
	caPriv crypto.Signer
}

// clientCert holds a client certificate and key in PEM form.
type clientCert struct {
	certPEM, keyPEM []byte
}

func newPKI(dir string) (*pki, error) {
	p := &pki{
		caCert:      filepath.Join(dir, "ca.crt"),
		caKey:       filepath.Join(dir, "ca.key"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servKey:     filepath.Join(dir, "apiserver.key"),
		saKey:       filepath.Join(dir, "sa.key"),
	}
	caPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "tether-e2e-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caPriv.Public(), caPriv)
	if err != nil {
		return nil, err
	}
	p.ca, err = x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p.caPriv = caPriv
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := writePEM(p.caCert, p.caPEM, caPriv, p.caKey); err != nil {
		return nil, err
	}

	// The serving certificate names every address a client in a test or a pod might
	// use: loopback, and the in-cluster names and the first service IP.
	servCert, servKeyPEM, err := p.serving("kube-apiserver",
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		net.ParseIP("127.0.0.1"), net.ParseIP(serviceIP))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.servingCert, servCert, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.servKey, servKeyPEM, 0o600); err != nil {
		return nil, err
	}

	saPriv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saPriv)})
	if err := os.WriteFile(p.saKey, saPEM, 0o600); err != nil {
		return nil, err
	}
	return p, nil
}

// client issues a client certificate for user in groups. kube-apiserver maps the
// common name to the user name and the organizations to groups.
func (p *pki) client(user string, groups ...string) (clientCert, error) {
	certPEM, keyPEM, err := p.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return clientCert{certPEM: certPEM, keyPEM: keyPEM}, err
}

// serving issues a TLS server certificate for the given names and addresses.
func (p *pki) serving(cn string, dnsNames []string, ips ...net.IP) (certPEM, keyPEM []byte, err error) {
	return p.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dnsNames,
		IPAddresses: ips,
	})
}

func (p *pki) issue(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = p.ca.NotBefore
	tmpl.NotAfter = p.ca.NotAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, priv.Public(), p.caPriv)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %q: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func writePEM(certPath string, certPEM []byte, key *ecdsa.PrivateKey, keyPath string) error {
	if err := os.WriteFile(certPath, certPEM, 0o600); err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand's reader does not fail (Go 1.24+ crashes instead)
	}
	return n
}
