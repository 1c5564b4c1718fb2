package local

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
)

// Encryption (repository versions 2 and 3).
//
// A repository has one random 32-byte master key. Two subkeys are derived
// from it with BLAKE3's key derivation: one for XChaCha20-Poly1305, one
// for the keyed BLAKE3 that names blobs. Every object but config, locks
// and keys is sealed: each blob of a pack on its own (so a restore still
// reads a blob by range, and prune copies a sealed blob into a new pack
// without opening it), the pack's table, each index object and each
// snapshot object. A sealed object is a random 24-byte nonce followed by
// the ciphertext and its 16-byte tag; XChaCha20's nonce is long enough to
// be drawn at random for every object of a repository's life.
//
// Repository version 3 seals blobs without a stored nonce: a blob's
// nonce is the first 24 bytes of its ID, the keyed BLAKE3 of its
// plaintext under a subkey independent of the cipher's (the synthetic IV
// of SIV, Rogaway and Shrimpton's deterministic authenticated
// encryption). Two different plaintexts would share a nonce only if they
// shared 192 bits of a keyed hash; the same plaintext always gives the
// same sealed bytes, which says only what its ID already says (that two
// copies of a blob are equal). Every blob is 24 bytes smaller, and prune
// still copies a sealed blob into a new pack as it is, since its nonce
// depends on its content only. Tables, index objects and snapshots keep a
// random nonce.
//
// Blob IDs are the keyed BLAKE3 of the plaintext: still content
// addresses, so deduplication works as before, but a reader of the
// bucket cannot test whether a given file is in it. Packs and index
// objects are named by the plain BLAKE3 of their stored (sealed) bytes,
// which says nothing about their content.
//
// The master key itself is stored wrapped, in keys/<id>, by a KeyWrapper:
// see key.go.

const (
	masterKeySize = 32
	sealOverhead  = chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead
	sealPrefix    = chacha20poly1305.NonceSizeX // what a sealed object has before the ciphertext
	// Contexts of the subkeys (BLAKE3 DeriveKey: fixed, unique strings).
	kdfContextSeal = "conveyor 2026-12-02 snapshot repository object encryption"
	kdfContextMAC  = "conveyor 2026-12-02 snapshot repository blob ids"
)

// Additional data binds a sealed object to its kind: an index object
// cannot be passed off as a snapshot, nor a pack's table as a blob.
var (
	adBlob     = []byte("conveyor blob")
	adTable    = []byte("conveyor pack table")
	adIndex    = []byte("conveyor index")
	adSnapshot = []byte("conveyor snapshot")
)

// errAuth: a sealed object did not authenticate (altered, damaged, or
// sealed by another key).
var errAuth = errors.New("does not authenticate: damaged or altered")

// sealer encrypts and names blobs with a repository's key. A nil sealer
// is an unencrypted (version 1) repository: objects are stored as they
// are and blobs are named by plain BLAKE3.
type sealer struct {
	aead    cipher.AEAD
	hashers sync.Pool // *blake3.Hasher keyed with the MAC subkey
	// idNonce: blobs are sealed with their ID as nonce, not a stored
	// random one (repository version 3).
	idNonce bool
}

func newSealer(master []byte) (*sealer, error) {
	if len(master) != masterKeySize {
		return nil, fmt.Errorf("repository key has %d bytes, want %d", len(master), masterKeySize)
	}
	var ek, mk [32]byte
	blake3.DeriveKey(kdfContextSeal, master, ek[:])
	blake3.DeriveKey(kdfContextMAC, master, mk[:])
	aead, err := chacha20poly1305.NewX(ek[:])
	if err != nil {
		return nil, err
	}
	s := &sealer{aead: aead}
	s.hashers.New = func() any {
		h, _ := blake3.NewKeyed(mk[:])
		return h
	}
	return s, nil
}

func newMasterKey() []byte {
	k := make([]byte, masterKeySize)
	if _, err := rand.Read(k); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return k
}

// blobID names a blob: the keyed BLAKE3 of its plaintext, or its plain
// BLAKE3 in an unencrypted repository.
func (s *sealer) blobID(b []byte) ID {
	if s == nil {
		return hashOf(b)
	}
	h := s.hashers.Get().(*blake3.Hasher)
	h.Reset()
	h.Write(b)
	var id ID
	h.Sum(id[:0])
	s.hashers.Put(h)
	return id
}

// seal appends the sealed form of plaintext to dst: a random nonce, then
// the ciphertext with its tag. Unencrypted: plaintext itself.
func (s *sealer) seal(dst, plaintext, ad []byte) []byte {
	if s == nil {
		return append(dst, plaintext...)
	}
	n := len(dst)
	dst = append(dst, make([]byte, chacha20poly1305.NonceSizeX)...)
	nonce := dst[n:]
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	return s.aead.Seal(dst, nonce, plaintext, ad)
}

// sealInPlace seals b[sealPrefix:] where it is, drawing the nonce into
// b[:sealPrefix], and returns the sealed object: b with the tag appended
// (no copy when b has sealOverhead-sealPrefix bytes of spare capacity).
// Unencrypted: b[sealPrefix:].
func (s *sealer) sealInPlace(b, ad []byte) []byte {
	if s == nil {
		return b[sealPrefix:]
	}
	nonce := b[:sealPrefix]
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	return s.aead.Seal(nonce, nonce, b[sealPrefix:], ad)
}

// open returns the plaintext of a sealed object (appended to dst), or
// errAuth. Unencrypted: stored itself.
func (s *sealer) open(dst, stored, ad []byte) ([]byte, error) {
	if s == nil {
		return stored, nil
	}
	if len(stored) < sealOverhead {
		return nil, errAuth
	}
	nonce, ct := stored[:chacha20poly1305.NonceSizeX], stored[chacha20poly1305.NonceSizeX:]
	out, err := s.aead.Open(dst, nonce, ct, ad)
	if err != nil {
		return nil, errAuth
	}
	return out, nil
}

// compact reports whether the repository is version 3: blobs sealed
// with their ID as nonce, tables and index objects in compact entries.
func (s *sealer) compact() bool { return s != nil && s.idNonce }

// blobPrefix is what a sealed blob holds before its ciphertext: a random
// nonce (version 2), or nothing (unencrypted, or version 3).
func (s *sealer) blobPrefix() int {
	if s == nil || s.idNonce {
		return 0
	}
	return sealPrefix
}

// blobOverhead is how much larger a sealed blob is than its plaintext.
func (s *sealer) blobOverhead() int {
	switch {
	case s == nil:
		return 0
	case s.idNonce:
		return chacha20poly1305.Overhead
	}
	return sealOverhead
}

// sealBlob appends the sealed form of blob id's stored plaintext z
// (compressed or not) to dst.
func (s *sealer) sealBlob(dst []byte, id ID, z []byte) []byte {
	if s == nil || !s.idNonce {
		return s.seal(dst, z, adBlob)
	}
	return s.aead.Seal(dst, id[:chacha20poly1305.NonceSizeX], z, adBlob)
}

// sealBlobInPlace is sealInPlace for blob id: b holds blobPrefix bytes
// of room, then the plaintext.
func (s *sealer) sealBlobInPlace(b []byte, id ID) []byte {
	if s == nil || !s.idNonce {
		return s.sealInPlace(b, adBlob)
	}
	return s.aead.Seal(b[:0], id[:chacha20poly1305.NonceSizeX], b, adBlob)
}

// openBlob returns the plaintext of sealed blob id, decrypted in place
// (stored is overwritten), or errAuth. Unencrypted: stored itself.
func (s *sealer) openBlob(id ID, stored []byte) ([]byte, error) {
	return s.openBlobTo(nil, id, stored)
}

// openBlobTo is openBlob with the plaintext written to dst's storage (an
// empty slice with room for it, not overlapping stored) instead of in
// place; nil dst: in place.
func (s *sealer) openBlobTo(dst []byte, id ID, stored []byte) ([]byte, error) {
	switch {
	case s == nil:
		return stored, nil
	case !s.idNonce:
		if len(stored) < sealPrefix {
			return nil, errAuth
		}
		if dst == nil {
			dst = stored[sealPrefix:sealPrefix]
		}
		return s.open(dst, stored, adBlob)
	}
	if dst == nil {
		dst = stored[:0]
	}
	out, err := s.aead.Open(dst, id[:chacha20poly1305.NonceSizeX], stored, adBlob)
	if err != nil {
		return nil, errAuth
	}
	return out, nil
}
