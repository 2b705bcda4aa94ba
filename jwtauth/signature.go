package jwtauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"math/big"
)

// algorithm checks the signatures of one JWS algorithm (RFC 7518 section 3)
// with the standard library's primitives, against keys parsed once when the
// JWKS is loaded (see publicKey).
type algorithm struct {
	hash crypto.Hash
	pss  bool // RSASSA-PSS (PS*) rather than RSASSA-PKCS1-v1_5 (RS*)
	ec   bool // ECDSA (ES*)
}

// algorithms are the implementations of supportedAlgorithms.
var algorithms = map[string]algorithm{
	"RS256": {hash: crypto.SHA256}, "RS384": {hash: crypto.SHA384}, "RS512": {hash: crypto.SHA512},
	"PS256": {hash: crypto.SHA256, pss: true}, "PS384": {hash: crypto.SHA384, pss: true}, "PS512": {hash: crypto.SHA512, pss: true},
	"ES256": {hash: crypto.SHA256, ec: true}, "ES384": {hash: crypto.SHA384, ec: true}, "ES512": {hash: crypto.SHA512, ec: true},
}

// digest returns the hash of the signing input, in buf.
func (a algorithm) digest(buf *[sha512.Size]byte, signed []byte) []byte {
	switch a.hash {
	case crypto.SHA256:
		d := sha256.Sum256(signed)
		return append(buf[:0], d[:]...)
	case crypto.SHA384:
		d := sha512.Sum384(signed)
		return append(buf[:0], d[:]...)
	default:
		d := sha512.Sum512(signed)
		return append(buf[:0], d[:]...)
	}
}

// verify reports whether sig is a signature of digest under key, a
// *rsa.PublicKey or an *ecdsa.PublicKey that publicKey.fits the algorithm.
// An ECDSA signature is R and S as fixed-size big-endian integers (RFC 7518
// section 3.4), not ASN.1; a PSS salt of any length is accepted, as jwx did.
func (a algorithm) verify(key any, digest, sig []byte) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		switch {
		case a.ec:
			return false
		case a.pss:
			return rsa.VerifyPSS(k, a.hash, digest, sig, nil) == nil
		default:
			return rsa.VerifyPKCS1v15(k, a.hash, digest, sig) == nil
		}
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		if !a.ec || len(sig) != 2*size {
			return false
		}
		r := new(big.Int).SetBytes(sig[:size])
		s := new(big.Int).SetBytes(sig[size:])
		return ecdsa.Verify(k, digest, r, s)
	}
	return false
}
