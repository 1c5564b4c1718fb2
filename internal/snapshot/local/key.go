package local

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/scrypt"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// KeyWrapper keeps a repository's master key: it wraps a new one into
// what a keys/ object stores, and unwraps it again. Password is one
// implementation; kmskey.Wrapper, beside this package, is the other: it
// has AWS KMS encrypt the master key under a KMS key, so that the right to
// read the repository is an IAM grant rather than a secret on disk.
type KeyWrapper interface {
	// Kind names the wrapping in the key object ("password", "aws-kms").
	Kind() string
	// Wrap seals master, the key of the repository whose ID is repo (a
	// wrapper may bind the result to it); the result is stored as is
	// (JSON) in the key object, so it must hold every parameter Unwrap
	// needs.
	Wrap(ctx context.Context, repo string, master []byte) (json.RawMessage, error)
	// Unwrap returns the master key from what Wrap stored for repo. It
	// returns an error wrapping snapshot.ErrWrongKey when this wrapper's
	// secret does not open it; any other error (a key service that
	// refuses or cannot be reached) says what to do.
	Unwrap(ctx context.Context, repo string, stored json.RawMessage) ([]byte, error)
}

// keyObject is a keys/<id> object: one wrapping of the master key.
type keyObject struct {
	Kind    string          `json:"kind"`
	Created time.Time       `json:"created"`
	Host    string          `json:"host"`
	Data    json.RawMessage `json:"data"`
}

// Password wraps the master key with a key derived from a password by
// scrypt (parameters and salt stored in the key object) and sealed with
// XChaCha20-Poly1305.
type Password struct {
	secret []byte
	// scrypt cost of new key objects (log2 N); 0: scryptLogN.
	logN uint8
}

// NewPassword returns a KeyWrapper for a password. An empty password is
// refused at Wrap and Unwrap.
func NewPassword(password string) *Password { return &Password{secret: []byte(password)} }

var _ KeyWrapper = (*Password)(nil)

// scrypt parameters of new key objects: N = 2^15, r = 8, p = 1 costs about
// 32 MiB and a tenth of a second, once per Open.
const (
	scryptLogN = 15
	scryptR    = 8
	scryptP    = 1
)

// passwordKey is what Password stores.
type passwordKey struct {
	KDF  string `json:"kdf"` // "scrypt"
	N    int    `json:"n"`
	R    int    `json:"r"`
	P    int    `json:"p"`
	Salt []byte `json:"salt"`
	// Sealed: nonce then ciphertext and tag of the master key.
	Sealed []byte `json:"sealed"`
}

var adKey = []byte("conveyor repository master key")

// Kind implements KeyWrapper.
func (p *Password) Kind() string { return "password" }

// Wrap implements KeyWrapper.
func (p *Password) Wrap(_ context.Context, _ string, master []byte) (json.RawMessage, error) {
	if len(p.secret) == 0 {
		return nil, errors.New("the snapshot password is empty")
	}
	logN := p.logN
	if logN == 0 {
		logN = scryptLogN
	}
	k := passwordKey{KDF: "scrypt", N: 1 << logN, R: scryptR, P: scryptP, Salt: make([]byte, 32)}
	rand.Read(k.Salt)
	kek, err := deriveKEK(p.secret, k)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	k.Sealed = aead.Seal(nonce, nonce, master, adKey)
	return json.Marshal(k)
}

// Unwrap implements KeyWrapper.
func (p *Password) Unwrap(_ context.Context, _ string, stored json.RawMessage) ([]byte, error) {
	if len(p.secret) == 0 {
		return nil, fmt.Errorf("%w (the password given is empty)", snapshot.ErrWrongKey)
	}
	var k passwordKey
	if err := json.Unmarshal(stored, &k); err != nil {
		return nil, err
	}
	// Bounds keep a forged key object from asking for gigabytes.
	if k.KDF != "scrypt" || k.N < 2 || k.N > 1<<20 || k.N&(k.N-1) != 0 || k.R < 1 || k.R > 32 || k.P < 1 || k.P > 16 {
		return nil, fmt.Errorf("key derivation %s N=%d r=%d p=%d is not supported", k.KDF, k.N, k.R, k.P)
	}
	kek, err := deriveKEK(p.secret, k)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, err
	}
	if len(k.Sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("wrapped key is cut short")
	}
	master, err := aead.Open(nil, k.Sealed[:aead.NonceSize()], k.Sealed[aead.NonceSize():], adKey)
	if err != nil {
		return nil, snapshot.ErrWrongKey
	}
	return master, nil
}

// addKey wraps master, the key of repository repo, with w and stores it
// as a new key object, whose name it returns.
func (r *Repo) addKey(ctx context.Context, w KeyWrapper, repo string, master []byte) (string, error) {
	data, err := w.Wrap(ctx, repo, master)
	if err != nil {
		return "", fmt.Errorf("wrap the repository key: %w", err)
	}
	body, _ := json.MarshalIndent(keyObject{Kind: w.Kind(), Created: time.Now().UTC(), Host: hostname(), Data: data}, "", "  ")
	name := "keys/" + newID()
	return name, r.put(ctx, name, body, true)
}

// openKey finds the key object that cfg.Key opens and sets the sealer.
func (r *Repo) openKey(ctx context.Context) error {
	objs, err := r.list(ctx, "keys/")
	if err != nil {
		return err
	}
	if len(objs) == 0 {
		return fmt.Errorf("%w: %s is encrypted but holds no key object (keys/): it cannot be read", errCorrupt, r.Location())
	}
	if r.cfg.Key == nil {
		return fmt.Errorf("%s is encrypted and no snapshot password is set: %w", r.Location(), snapshot.ErrWrongKey)
	}
	var tried []error
	others := map[string]bool{} // kinds of key objects cfg.Key cannot open
	for _, o := range objs {
		b, err := r.get(ctx, o.Name)
		if err != nil {
			return err
		}
		var k keyObject
		if err := json.Unmarshal(b, &k); err != nil {
			tried = append(tried, fmt.Errorf("%s: %v", r.key(o.Name), err))
			continue
		}
		if k.Kind != r.cfg.Key.Kind() {
			others[k.Kind] = true
			continue
		}
		master, err := r.cfg.Key.Unwrap(ctx, r.rc.ID, k.Data)
		if err != nil {
			tried = append(tried, err)
			continue
		}
		sl, err := newSealer(master)
		if err != nil {
			return fmt.Errorf("%s: %w", r.key(o.Name), err)
		}
		if r.rc.Encryption == nil || sl.blobID(keyCheckText) != r.rc.Encryption.Check {
			continue // a key of a repository that was never created
		}
		r.sealer, r.master, r.keyName = sl, master, o.Name
		return nil
	}
	// A key service that refused or failed says so: it is not a wrong
	// key, and its message says what to do.
	var failed []error
	for _, err := range tried {
		if !errors.Is(err, snapshot.ErrWrongKey) {
			failed = append(failed, err)
		}
	}
	switch {
	case len(failed) > 0:
		return fmt.Errorf("open the key of snapshot repository %s: %w", r.Location(), errors.Join(failed...))
	case len(tried) > 0:
		return tried[0]
	case len(others) > 0:
		kinds := make([]string, 0, len(others))
		for k := range others {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		return wrongKind(fmt.Sprintf("snapshot repository %s: its key is wrapped by %s, not by a %s: %s", r.Location(), strings.Join(kinds, ", "), r.cfg.Key.Kind(), kindHint(kinds)))
	}
	return snapshot.ErrWrongKey
}

// wrongKind is snapshot.ErrWrongKey in its own words: the key given is
// of another kind than the repository's.
type wrongKind string

func (e wrongKind) Error() string        { return string(e) }
func (e wrongKind) Is(target error) bool { return target == snapshot.ErrWrongKey }

// kindHint says which setting opens a key object of these kinds.
func kindHint(kinds []string) string {
	for _, k := range kinds {
		if k == "aws-kms" {
			return "set snapshot.kms_key (CONVEYOR_SNAPSHOT_KMS_KEY) to the KMS key it was created with"
		}
	}
	return "set the password it was created with"
}

// deriveKEK runs scrypt for a password key object. scrypt works in
// 128*N*r bytes (32 MiB by default), garbage as soon as it returns; a
// collection then lets what follows reuse that memory. Otherwise the
// collector, which last saw it live, lets the heap grow to twice its size
// before it looks again, and every snapshot operation, which unwraps the
// key first, pays those 32 MiB on top of its own peak.
func deriveKEK(secret []byte, k passwordKey) ([]byte, error) {
	kek, err := scrypt.Key(secret, k.Salt, k.N, k.R, k.P, chacha20poly1305.KeySize)
	if 128*k.N*k.R >= 8<<20 {
		runtime.GC()
	}
	return kek, err
}
