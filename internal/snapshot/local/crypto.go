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

// Encryption (repository version 2).
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
